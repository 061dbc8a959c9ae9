"""Write the Triton model repository: the exported ONNX models in their model folders."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from e2v_client import contract
from e2v_export.checkpoint import LoadedCheckpoint
from e2v_export.onnx_export import export_onnx


def write_repository(checkpoint: LoadedCheckpoint, out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        result = export_onnx(checkpoint, tmp)
        for model, onnx_file in (
            (contract.ENCODER_MODEL, result.encoder_path),
            (contract.CLASSIFIER_MODEL, result.classifier_path),
        ):
            version_dir = out / model / "1"
            version_dir.mkdir(parents=True, exist_ok=True)
            onnx_file.replace(version_dir / "model.onnx")
        for name in (contract.LABELS_FILE, contract.MODEL_INFO_FILE):
            shutil.copy(Path(tmp) / name, out / contract.CLASSIFIER_MODEL / name)
    return out.resolve()
