"""Triton Python model `classifier` (portable flavour): the exported classifier ONNX in ONNX Runtime."""

from e2v_export.triton_onnx import OnnxTritonModel

from e2v_client import contract


class TritonPythonModel(OnnxTritonModel):
    inputs = contract.CLASSIFIER_INPUTS
    outputs = contract.CLASSIFIER_OUTPUTS

    def output_length(self, input_length):
        """Frame scores have as many frames as the frame features given."""
        return input_length
