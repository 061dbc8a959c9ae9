"""Triton Python model that runs the exported encoder or classifier in ONNX Runtime or OpenVINO (portable flavour).

e2v-export copies this file as model.py into the encoder's and the classifier's
version folders, with the model file and emotion2vec_contract.py and
emotion2vec_runtimes.py beside it: it stands alone in any Triton whose Python has
numpy and the runtime, including the pip-installed server, which has only the
Python backend. A tuning.json in the model's folder (e2v-export --tune) says which
CPU the choice was measured on: the model refuses a CPU without what the choice
needs and warns on another CPU model. The runtime, precision, threads, CPU niceness (the bulk lane's
encoder: contract.BULK_NICENESS) and tensor names come from the model's config.pbtxt: the first input has
a length axis (axis 1), the second holds each row's length; the outputs are those of the model file.

The inputs are marked allow_ragged_batch, so one execute() may get requests of
any lengths. On a CPU, padding is pure waste (a 1 s utterance padded to 30 s
costs 30 times the compute) and batching gains little, so the rows are cut to
their real lengths (rounded up to ``length_bucket`` steps, so that the runtime sees
a bounded set of shapes) and run in groups of similar length: within a group the
longest is at most ``max_padding_ratio`` times the shortest and which hold at
most ``max_run_steps`` steps padded (e2v-export --max-run-seconds: by default one
30 s request, so that a batch of long requests needs no more memory than one
of them). Each response gets
back the rows and the length axis its own input implies (padding masked to 0,
as in one padded batch); the numbers are those of the row run alone.
"""

import json
from pathlib import Path

import emotion2vec_contract as contract
import emotion2vec_runtimes as runtimes
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = contract.string_parameters(config)
        self.sequence_name, self.lengths_name = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]
        self.step_window = int(params[contract.PARAM_STEP_WINDOW])
        self.step_hop = int(params[contract.PARAM_STEP_HOP])
        self.max_padding_ratio = float(params[contract.PARAM_MAX_PADDING_RATIO])
        self.max_run_steps = int(params[contract.PARAM_MAX_RUN_STEPS])
        self.length_bucket = int(params[contract.PARAM_LENGTH_BUCKET])
        self.max_group = max(1, int(config.get("max_batch_size", 1)))

        runtime, precision = params[contract.PARAM_RUNTIME], params[contract.PARAM_PRECISION]
        niceness = int(params.get(contract.PARAM_NICENESS, "0"))
        if niceness:  # the bulk lane's encoder: before the runtime starts the threads that inherit it
            runtimes.lower_cpu_priority(niceness)
        # a tuned encoder (e2v-export --tune) refuses a CPU that lacks what its choice needs, and warns on
        # another CPU model; raising here fails the model's loading with the message in Triton's log
        warning = runtimes.check_tuned_machine(args["model_repository"])
        if warning and args["model_instance_name"].endswith("_0"):  # once, from the first instance
            pb_utils.Logger.log_warn(f"{args['model_name']}: {warning}")
        version_dir = Path(args["model_repository"]) / args["model_version"]
        path = contract.model_file(version_dir, runtime)
        gpu = int(args["model_instance_device_id"]) if args["model_instance_kind"] == "GPU" else None
        # refuses, and so fails the model's loading, when the runtime would not run the precision asked for
        self.session = runtimes.open_model(path, runtime, precision, int(params[contract.PARAM_THREADS]), gpu)
        self.sequence_outputs = self.session.sequence_outputs

    def execute(self, requests):
        rows, real_lengths, owners = [], [], []  # one entry per utterance; owners: (request, padded length)
        for r, request in enumerate(requests):
            sequence = pb_utils.get_input_tensor_by_name(request, self.sequence_name).as_numpy()
            lengths = pb_utils.get_input_tensor_by_name(request, self.lengths_name).as_numpy().reshape(-1)
            for row, length in zip(sequence, lengths, strict=True):
                length = int(length)
                # cut the padding off, but to a whole number of buckets: ONNX Runtime keeps, for good, a memory
                # plan for each input shape it has run (about 28 KB each on large): with every length its own
                # shape, memory grew without bound. A row too short to run (warm-up zeros) keeps its padding.
                cut = min(contract.round_up(length, self.length_bucket), len(row))
                rows.append(row[:cut] if length >= self.step_window else row)
                real_lengths.append(length)
                owners.append((r, sequence.shape[1]))
        try:
            results = self.run_grouped(rows, real_lengths)
        except Exception as exc:  # e.g. out of memory: fail these requests, keep serving
            error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        finally:  # the buffers of a long batch go back to the OS, not kept for the next
            runtimes.free_memory_to_the_os()
        return [
            self.response([i for i, (owner, _) in enumerate(owners) if owner == r], owners, results)
            for r in range(len(requests))
        ]

    def run_grouped(self, rows: list, real_lengths: list) -> list:
        """{output name: value} for each row, the rows run in groups of similar length."""
        results = [None] * len(rows)
        lengths = [len(row) for row in rows]
        for group in contract.length_groups(lengths, self.max_padding_ratio, self.max_group, self.max_run_steps):
            batch, _ = contract.pad_rows([rows[i] for i in group])
            lengths = np.array([real_lengths[i] for i in group], dtype=np.int64)
            values = self.session.run({self.sequence_name: batch, self.lengths_name: lengths})
            for k, i in enumerate(group):
                results[i] = {name: value[k] for name, value in zip(self.session.output_names, values, strict=True)}
        return results

    def response(self, mine: list, owners: list, results: list):
        """The response of one request, from the results of its rows (indices `mine`)."""
        padded_length = owners[mine[0]][1]
        tensors = []
        for name in self.output_names:
            if name in self.sequence_outputs:
                # the length axis this request's own padded input implies, zeros past the real steps
                steps = contract.output_steps(padded_length, self.step_window, self.step_hop)
                value, _ = contract.pad_rows([results[i][name][:steps] for i in mine], steps)
            else:
                value = np.stack([results[i][name] for i in mine])
                if value.ndim == 1:
                    value = value.reshape(-1, 1)  # [B] -> [B, 1], the config's dims [1]
            tensors.append(pb_utils.Tensor(name, np.ascontiguousarray(value)))
        return pb_utils.InferenceResponse(output_tensors=tensors)
