"""clonekit.gguf_modelfile: chat-template families, the Ollama Modelfile and run.txt, Go templates vs Jinja."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from clonekit.gguf_modelfile import TEMPLATES, default_system_prompt, detect_chat_family, write_modelfile
from test_gguf import GEMMA_TEMPLATE, LLAMA3_TEMPLATE, MISTRAL_TEMPLATE, _smol_dir


@pytest.mark.parametrize("template,family", [(LLAMA3_TEMPLATE, "llama3"), (GEMMA_TEMPLATE, "gemma"), (MISTRAL_TEMPLATE, "mistral"),
                                             ("{% for m in messages %}<|user|>\n{{ m.content }}<|end|>{% endfor %}", "phi3"),
                                             ("{{ messages[0].content }}", None)])
def test_detect_chat_family(template, family):
    assert detect_chat_family(template) == family


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="the embedded model's template needs clonekit[train] to build")
def test_modelfile_chatml_keeps_default_system_prompt(tmp_path):
    smol_template = (Path(_smol_dir()) / "chat_template.jinja").read_text()
    path = write_modelfile(tmp_path / "clone-q8_0.gguf", tmp_path, smol_template, "<|im_end|>", temperature=0.6, num_ctx=1024)
    text = path.read_text()
    assert "FROM ./clone-q8_0.gguf" in text
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in text
    assert text.count('PARAMETER stop "<|im_end|>"') == 1 and 'PARAMETER stop "<|im_start|>"' in text
    assert "PARAMETER temperature 0.6" in text and "PARAMETER num_ctx 1024" in text and "PARAMETER repeat_penalty" in text
    assert TEMPLATES["chatml"][0] in text
    run = (tmp_path / "run.txt").read_text()
    assert "llama-cli -m clone-q8_0.gguf -cnv --jinja" in run and "--chat-template chatml" in run and "ollama create clone -f Modelfile" in run


@pytest.mark.parametrize("template,stops", [(LLAMA3_TEMPLATE, ["<|eot_id|>", "<|end_of_text|>"]), (GEMMA_TEMPLATE, ["<end_of_turn>"]),
                                            (MISTRAL_TEMPLATE, ["</s>", "[INST]"])])
def test_modelfile_other_families(tmp_path, template, stops):
    text = write_modelfile(tmp_path / "m.gguf", tmp_path, template, "<eos>", system="Be Alex.").read_text()
    family = detect_chat_family(template)
    assert f'TEMPLATE """{TEMPLATES[family][0]}"""' in text and 'SYSTEM """Be Alex."""' in text
    for s in stops + ["<eos>"]:
        assert f'PARAMETER stop "{s}"' in text


def test_modelfile_unknown_template_says_so(tmp_path):
    text = write_modelfile(tmp_path / "m.gguf", tmp_path, "{{ messages }}", "</s>").read_text()
    assert "TEMPLATE" not in text.replace("no TEMPLATE line", "") and "not recognised" in text


def test_default_system_prompt_only_when_template_inserts_one():
    assert default_system_prompt(LLAMA3_TEMPLATE) is None
    assert default_system_prompt("{{ broken") is None


@pytest.mark.skipif(shutil.which("go") is None, reason="go not installed: the Go templates are checked against Go's text/template only where it is")
def test_go_templates_render_like_jinja(tmp_path):
    """Render each Ollama template with Go's text/template and a Jinja reference of the family: same prompt.

    Run with and without a system prompt (Ollama passes it as .System and also as a
    system message in .Messages, which the templates skip)."""
    import subprocess

    from jinja2 import Environment

    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"}, {"role": "user", "content": "ok?"}]
    sys_first = "{% set sys = messages[0]['content'] if messages[0]['role'] == 'system' else '' %}"
    jinja = {"chatml": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n",
             "llama3": LLAMA3_TEMPLATE.replace("{{ bos_token }}", ""),
             "gemma": sys_first + "{% for m in messages if m.role != 'system' %}<start_of_turn>{{ 'model' if m.role == 'assistant' else 'user' }}\n"
                      "{% if loop.first and sys %}{{ sys }}\n\n{% endif %}{{ m.content }}<end_of_turn>\n{% endfor %}<start_of_turn>model\n",
             "phi3": "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}<|assistant|>\n",
             "mistral": sys_first + "{% for m in messages if m.role != 'system' %}{% if m.role == 'user' %}[INST] {% if loop.last and sys %}{{ sys }}\n\n"
                        "{% endif %}{{ m.content }}[/INST]{% else %} {{ m.content }}</s>{% endif %}{% endfor %}"}
    cases = [("", turns), ("Be Alex.", [{"role": "system", "content": "Be Alex."}] + turns)]
    prog = ['package main', 'import ("os"; "text/template")', 'type M struct { Role, Content string }', "func main() {"]
    for k, (system, msgs) in enumerate(cases):
        prog.append(f"  msgs{k} := []M{{" + ", ".join("{%s, %s}" % (json.dumps(m["role"]), json.dumps(m["content"])) for m in msgs) + "}")
        for fam, (go, _, _) in TEMPLATES.items():
            prog.append(f'  template.Must(template.New("{fam}").Parse({json.dumps(go)})).Execute(os.Stdout, map[string]any{{"Messages": msgs{k}, '
                        f'"System": {json.dumps(system)}}}); os.Stdout.WriteString("\\x00")')
    prog.append("}")
    (tmp_path / "main.go").write_text("\n".join(prog))
    out = subprocess.run(["go", "run", str(tmp_path / "main.go")], capture_output=True, text=True, check=True, timeout=300).stdout.split("\x00")
    env = Environment(keep_trailing_newline=True)
    expected = [env.from_string(jinja[fam]).render(messages=msgs, add_generation_prompt=True, bos_token="") for _, msgs in cases for fam in TEMPLATES]
    assert out[:-1] == expected
