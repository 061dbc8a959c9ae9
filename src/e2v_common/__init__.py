"""What every package of this project shares, and the only code the thin client imports besides its own.

- contract: tensor and model names, the audio format, frames, normalisation, padding, labels, the gateway's
  token header (copied into the Triton models' folders as emotion2vec_contract.py);
- runtimes: an exported model opened in ONNX Runtime or OpenVINO at a precision (copied beside the encoder
  and classifier as emotion2vec_runtimes.py; the export runs it too, outside Triton);
- cpu: what this CPU runs natively (bf16, VNNI, AMX), its peak, and the untuned encoder precision for it;
- synthetic_speech: deterministic speech-like audio for tests, tuning and benchmarks.

Each imports only numpy and the standard library (runtimes imports a runtime when it opens a model).
"""
