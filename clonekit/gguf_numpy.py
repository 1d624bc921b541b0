"""Quantize a GGUF in pure numpy (the `gguf` package), for when llama-cpp-python is missing.

Writes Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 (and F16/BF16/F32) with the same tensor choices as
llama.cpp's quantizer, except that the output matrix stays at Q8_0 (llama.cpp uses
Q6_K, which numpy cannot write). K-quants and importance matrices need llama.cpp.

Run as (`quantize_gguf(..., backend="numpy")` calls it; the same without llama-cpp-python):
    python -c "from clonekit.gguf import quantize_gguf; quantize_gguf('clone-f16.gguf', 'clone-q4_0.gguf', 'q4_0', backend='numpy')"
"""

from __future__ import annotations

from pathlib import Path

from .gguf import QUANTS

# llama.cpp keeps the output matrix (or tied embedding) at higher precision; Q6_K is not
# available in numpy, so the numpy path keeps it at Q8_0 for the 4- and 5-bit types.
_NEVER_QUANTIZED = ("position_embd", "ffn_gate_inp", "ssm_", "time_mix", "rel_pos")


def _quantize_numpy(src: Path, dst: Path, type_name: str) -> None:
    import gguf
    import numpy as np
    from gguf.quants import dequantize, quantize

    from tqdm.auto import tqdm

    reader = gguf.GGUFReader(src)
    target = gguf.GGMLQuantizationType[type_name]
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch=arch, endianess=reader.endianess)
    for fld in reader.fields.values():
        if fld.name.startswith("GGUF.") or fld.name in ("general.architecture", "general.file_type"):
            continue
        sub = fld.types[-1] if fld.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(fld.name, fld.contents(), fld.types[0], sub_type=sub)
    writer.add_file_type(getattr(gguf.LlamaFileType, QUANTS_BY_NP[type_name]))
    names = {t.name for t in reader.tensors}
    for t in tqdm(reader.tensors, desc=f"quantize {type_name} (numpy)", unit="tensor"):
        src_type = t.tensor_type
        want = target
        if t.name == "output.weight" or (t.name == "token_embd.weight" and "output.weight" not in names):
            want = gguf.GGMLQuantizationType.Q8_0 if target not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16) else target
        quantizable = (len(t.shape) >= 2 and t.name.endswith(".weight") and int(t.shape[0]) % gguf.GGML_QUANT_SIZES[want][0] == 0
                       and not any(s in t.name for s in _NEVER_QUANTIZED))
        if not quantizable or want == src_type:
            writer.add_tensor(t.name, t.data, raw_dtype=src_type)
            continue
        values = dequantize(np.asarray(t.data), src_type).reshape(int(np.prod(t.shape[1:])), int(t.shape[0]))
        writer.add_tensor(t.name, quantize(values, want), raw_dtype=want)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()


QUANTS_BY_NP = {np_t: ft for ft, np_t in QUANTS.values() if np_t}
