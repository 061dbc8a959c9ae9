"""Triton Python model `preprocess`: one utterance per request -> the encoder's padded batch.

Each request's AUDIO is [1, N] float32 samples at 16 kHz (the client decodes and
resamples). The input is marked allow_ragged_batch, so one execute() receives
requests of different lengths; each utterance is checked and normalised on its
own samples (as FunASR does), then all are zero-padded to one length (the batch
maximum rounded up to a bucket) so that the encoder's dynamic batcher can merge
them. A bad request gets its own Triton error; the others go on.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from e2v_client import contract


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.max_seconds = float(params[contract.PARAM_MAX_SECONDS])
        self.bucket = int(params["pad_to_multiple_of_samples"])

    def execute(self, requests):
        responses = [None] * len(requests)
        utterances = []  # (request index, normalised rows)
        for i, request in enumerate(requests):
            audio = pb_utils.get_input_tensor_by_name(request, contract.PREPROCESS_INPUT).as_numpy()
            try:
                for row in audio:
                    contract.check_waveform(row, self.max_seconds)
                utterances.append((i, [contract.normalize_waveform(row) for row in audio]))
            except ValueError as exc:
                responses[i] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"{contract.PREPROCESS_INPUT}: {exc}", pb_utils.TritonError.INVALID_ARG)
                )
        if utterances:
            longest = max(len(row) for _, rows in utterances for row in rows)
            padded_length = -(-longest // self.bucket) * self.bucket
            wave_name, lengths_name = contract.ENCODER_INPUTS
            for i, rows in utterances:
                waveform = np.zeros((len(rows), padded_length), dtype=np.float32)
                for r, row in enumerate(rows):
                    waveform[r, : len(row)] = row
                lengths = np.array([[len(row)] for row in rows], dtype=np.int64)
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(wave_name, waveform), pb_utils.Tensor(lengths_name, lengths)]
                )
        return responses
