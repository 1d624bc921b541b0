"""Optional person-name finding with an NER model (`PrivacyConfig(ner=True)`).

natasha for Russian text, spaCy `en_core_web_sm` for English; when neither is
installed the hook finds nothing and says nothing (the rule-based scanner still
runs). Models load once per language (`_ner_backend` is cached; tests clear it
with `_ner_backend.cache_clear()`). Install with: pip install natasha
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

from .names import _CYR


def _add_ner(text: str, cands: list[tuple[int, int, str, str]]) -> list[tuple[int, int, str, str]]:
    """Add person names an NER model finds, where no participant name or blocklist entry was found."""
    backend = _ner_backend("ru" if _CYR.search(text) else "en")
    if backend is None or not text:
        return cands
    known = [(s, e) for s, e, t, _ in cands if t in ("name", "blocked")]
    extra = [(s, e, "name", "ner:" + text[s:e].lower()) for s, e in backend(text)
             if not any(s < b and a < e for a, b in known)]
    return cands + extra


@lru_cache(maxsize=2)
def _ner_backend(lang: str) -> Callable[[str], list[tuple[int, int]]] | None:
    """natasha (Russian) or spaCy en_core_web_sm (English), or None when not installed."""
    try:
        if lang == "ru":
            from natasha import Doc, NewsEmbedding, NewsNERTagger, Segmenter

            segmenter, tagger = Segmenter(), NewsNERTagger(NewsEmbedding())

            def run(text: str) -> list[tuple[int, int]]:
                doc = Doc(text)
                doc.segment(segmenter)
                doc.tag_ner(tagger)
                return [(sp.start, sp.stop) for sp in doc.spans if sp.type == "PER"]

            return run
        import spacy

        nlp = spacy.load("en_core_web_sm")
        return lambda text: [(ent.start_char, ent.end_char) for ent in nlp(text).ents if ent.label_ == "PERSON"]
    except (ImportError, OSError):
        return None
