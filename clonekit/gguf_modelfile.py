"""Write how to run a GGUF: an Ollama Modelfile and run.txt (llama.cpp, Ollama and Python commands).

The model's Jinja chat template is recognised by family (ChatML, Llama 3, Gemma,
Phi-3, Mistral; `detect_chat_family`) and written as the equivalent Ollama Go
template (TEMPLATES) with the family's stop strings; the system prompt the clone
was trained with (or the one the template inserts by default) becomes the SYSTEM line.

Run as (`clonekit gguf` writes both files next to the GGUFs):
    python -c "from clonekit.gguf_modelfile import write_modelfile; write_modelfile('runs/me/gguf/clone-q8_0.gguf', 'runs/me/gguf')"
"""

from __future__ import annotations

import re
from pathlib import Path

from .gguf_inspect import inspect_gguf

# family -> (Ollama Go template, stop strings, llama.cpp built-in --chat-template name).
# System prompts come from Ollama's .System (SYSTEM line); the loops render user/assistant turns.
TEMPLATES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "chatml": ("""{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range .Messages }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
<|im_start|>assistant
{{ else if eq .Role "assistant" }}{{ .Content }}<|im_end|>
{{ end }}
{{- end }}""", ("<|im_end|>", "<|im_start|>"), "chatml"),
    "llama3": ("""{{- if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>
{{- end }}
{{- range .Messages }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>

{{ .Content }}<|eot_id|><|start_header_id|>assistant<|end_header_id|>

{{ else if eq .Role "assistant" }}{{ .Content }}<|eot_id|>
{{- end }}
{{- end }}""", ("<|eot_id|>", "<|start_header_id|>", "<|end_of_text|>"), "llama3"),
    "gemma": ("""{{- $first := true }}
{{- range .Messages }}
{{- if eq .Role "user" }}<start_of_turn>user
{{ if and $.System $first }}{{ $.System }}

{{ end }}{{ .Content }}<end_of_turn>
<start_of_turn>model
{{ $first = false }}
{{- else if eq .Role "assistant" }}{{ .Content }}<end_of_turn>
{{ end }}
{{- end }}""", ("<end_of_turn>", "<start_of_turn>"), "gemma"),
    "phi3": ("""{{- if .System }}<|system|>
{{ .System }}<|end|>
{{ end }}
{{- range .Messages }}
{{- if eq .Role "user" }}<|user|>
{{ .Content }}<|end|>
<|assistant|>
{{ else if eq .Role "assistant" }}{{ .Content }}<|end|>
{{ end }}
{{- end }}""", ("<|end|>", "<|user|>", "<|assistant|>", "<|endoftext|>"), "phi3"),
    "mistral": ("""{{- range $i, $_ := .Messages }}
{{- if eq .Role "user" }}[INST] {{ if and $.System (eq (len (slice $.Messages $i)) 1) }}{{ $.System }}

{{ end }}{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }} {{ .Content }}</s>
{{- end }}
{{- end }}""", ("</s>", "[INST]"), "mistral-v3"),
}
_FAMILY_MARKERS = [("<|im_start|>", "chatml"), ("<|start_header_id|>", "llama3"), ("<start_of_turn>", "gemma"),
                   ("<|user|>", "phi3"), ("[INST]", "mistral")]


def detect_chat_family(chat_template: str | None) -> str | None:
    """Which TEMPLATES family a Jinja chat template belongs to, or None.

    >>> detect_chat_family("{% for m in messages %}<|im_start|>{{ m.role }}...{% endfor %}")
    'chatml'
    """
    for marker, family in _FAMILY_MARKERS:
        if chat_template and marker in chat_template:
            return family
    return None


def default_system_prompt(chat_template: str | None) -> str | None:
    """The system prompt a template inserts when the conversation has none (SmolLM2, Llama 3.1 do).

    The clone was trained with it in front of every chat, so Ollama should send it too.
    """
    family = detect_chat_family(chat_template)
    pattern = {"chatml": r"^<\|im_start\|>system\n(.*?)<\|im_end\|>", "llama3": r"<\|start_header_id\|>system<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>"}.get(family or "")
    if not pattern:
        return None
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals.update(raise_exception=lambda msg: (_ for _ in ()).throw(ValueError(msg)), strftime_now=lambda fmt: "")
        text = env.from_string(chat_template).render(messages=[{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                                    bos_token="", eos_token="")
    except Exception:  # any template error just means "no default found"
        return None
    m = re.search(pattern, text, re.S)
    return m.group(1) if m else None


def write_modelfile(gguf_path: str | Path, out_dir: str | Path, chat_template: str | None = None, eos_token: str | None = None, *,
                    system: str | None = None, temperature: float = 0.7, top_p: float = 0.9, repeat_penalty: float = 1.1,
                    num_ctx: int = 2048, model_name: str = "clone") -> Path:
    """Write `Modelfile` (Ollama) and `run.txt` (llama.cpp, Ollama and Python commands) into out_dir.

    The chat template and end token are read from the GGUF when not given. Templates
    of the ChatML, Llama-3, Gemma, Phi-3 and Mistral families are translated to Go
    templates; any other family gets no TEMPLATE line (Ollama then falls back to the
    GGUF's own template) and a comment saying so.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if chat_template is None or eos_token is None:
        info = inspect_gguf(gguf_path)
        chat_template = chat_template if chat_template is not None else info["chat_template"]
        eos_token = eos_token or info["eos_token"]
        eot = info.get("eot_token")
    else:
        eot = None
    family = detect_chat_family(chat_template)
    if system is None or system == "":
        system = default_system_prompt(chat_template) or ""
    src = f"./{gguf_path.name}" if gguf_path.parent.resolve() == out_dir.resolve() else str(gguf_path.resolve())
    lines = [f"# Ollama Modelfile written by clonekit for {gguf_path.name}", f"FROM {src}", ""]
    stops: list[str] = []
    if family:
        go_template, family_stops, _ = TEMPLATES[family]
        lines += [f'# chat template family: {family}', f'TEMPLATE """{go_template}"""', ""]
        stops += family_stops
    else:
        lines += ["# chat template not recognised: no TEMPLATE line, Ollama uses the GGUF's own tokenizer.chat_template", ""]
    for tok in (eos_token, eot):
        if tok and tok not in stops:
            stops.append(tok)
    if system:
        lines += [f'SYSTEM """{system}"""', ""]
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    lines += [f"PARAMETER temperature {temperature}", f"PARAMETER top_p {top_p}", f"PARAMETER repeat_penalty {repeat_penalty}",
              f"PARAMETER num_ctx {num_ctx}", ""]
    from .storage import atomic_write_text

    modelfile = atomic_write_text(out_dir / "Modelfile", "\n".join(lines))
    sampling = f"-c {num_ctx} --temp {temperature} --top-p {top_p} --repeat-penalty {repeat_penalty}"
    builtin = f"--chat-template {TEMPLATES[family][2]}" if family else "--jinja"
    run = [
        f"# How to run {gguf_path.name}",
        "", "# llama.cpp, chat in the terminal with the chat template stored in the GGUF:",
        f"llama-cli -m {gguf_path.name} -cnv --jinja {sampling}",
        "# the same with llama.cpp's built-in template of this family:",
        f"llama-cli -m {gguf_path.name} -cnv {builtin} {sampling}",
        "# OpenAI-compatible server on http://localhost:8080:",
        f"llama-server -m {gguf_path.name} --jinja {sampling} --port 8080",
        "", "# Ollama (uses the Modelfile next to this file):",
        f"ollama create {model_name} -f Modelfile", f"ollama run {model_name}",
        "", "# Python (pip install 'clonekit[gguf]'):",
        f"python -c \"from clonekit.gguf_chat import chat_gguf; print(chat_gguf('{gguf_path.name}', [{{'role': 'user', 'content': 'hi'}}]))\"", "",
    ]
    atomic_write_text(out_dir / "run.txt", "\n".join(run))
    return modelfile
