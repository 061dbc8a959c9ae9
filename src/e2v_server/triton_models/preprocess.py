"""Triton Python model `preprocess`: one utterance per request -> the encoder's padded batch.

Each request's AUDIO is [1, N] float32 samples at 16 kHz (the client decodes and
resamples). The input is marked allow_ragged_batch, so one execute() receives
requests of different lengths; each utterance is checked and normalised on its
own samples (as FunASR does), then all are zero-padded to one length (the batch
maximum rounded up to a multiple) so that the encoder's dynamic batcher can
merge them. A bad request gets its own Triton error; the others go on.

Stands alone in any Triton: it imports numpy and emotion2vec_contract.py, which
e2v-export copies beside it. Tensor names come from this model's config.
"""

import json

import emotion2vec_contract as contract
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = contract.string_parameters(config)
        self.max_seconds = float(params[contract.PARAM_MAX_SECONDS])
        self.pad_multiple = int(params[contract.PARAM_PAD_MULTIPLE])
        (self.audio_name,) = [tensor["name"] for tensor in config["input"]]
        self.waveform_name, self.lengths_name = [tensor["name"] for tensor in config["output"]]

    def execute(self, requests):
        responses = [None] * len(requests)
        utterances = []  # (request index, its normalised rows)
        for i, request in enumerate(requests):
            audio = pb_utils.get_input_tensor_by_name(request, self.audio_name).as_numpy()
            try:
                for row in audio:
                    contract.check_waveform(row, self.max_seconds)
                utterances.append((i, [contract.normalize_waveform(row) for row in audio]))
            except ValueError as exc:
                error = pb_utils.TritonError(f"{self.audio_name}: {exc}", pb_utils.TritonError.INVALID_ARG)
                responses[i] = pb_utils.InferenceResponse(error=error)
        if not utterances:
            return responses
        # one padded length for the whole execute(), so that the encoder's batcher can merge the responses
        longest = max(len(row) for _, rows in utterances for row in rows)
        padded_length = contract.round_up(longest, self.pad_multiple)
        for i, rows in utterances:
            waveform, lengths = contract.pad_rows(rows, padded_length)
            outputs = [
                pb_utils.Tensor(self.waveform_name, waveform),
                pb_utils.Tensor(self.lengths_name, lengths[:, None]),
            ]
            responses[i] = pb_utils.InferenceResponse(output_tensors=outputs)
        return responses
