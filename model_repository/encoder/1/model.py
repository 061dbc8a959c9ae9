"""Triton Python model `encoder` (portable flavour): the exported encoder ONNX in ONNX Runtime.

Runs where Triton has only the Python backend (the pip-installed server). The
requests of one execute() are padded to a common length and run as one batch;
each response gets the frames its own input length implies.
"""

from e2v_export.triton_onnx import OnnxTritonModel

from e2v_client import contract


class TritonPythonModel(OnnxTritonModel):
    inputs = contract.ENCODER_INPUTS
    outputs = contract.ENCODER_OUTPUTS
    min_length = contract.FRAME_RECEPTIVE_FIELD

    def output_length(self, input_length):
        """Frames for a padded waveform of input_length samples."""
        return contract.frames_for_samples(input_length)
