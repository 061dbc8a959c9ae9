#!/usr/bin/env node
// Score one clip with the emotion2vec service through its gateway: KServe v2 gRPC, TLS, bearer token.
//   node score.js --url HOST:PORT --root-cert FILE --token-file FILE clip.wav
//   node score.js --url HOST:PORT --root-cert FILE --token-file FILE --segments recording.wav
// clip.wav: 16 kHz mono 16-bit PCM, one utterance (30 s at most by default), e.g. from
//   ffmpeg -i clip.m4a -ac 1 -ar 16000 -c:a pcm_s16le clip.wav
// --segments: the timeline of a recording of any length, "START-END EMOTION CONFIDENCE" per speech segment.
// --stream: the same lines from a live stream, each as its segment closes (the file sent as a microphone would).
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { parseArgs } = require("node:util");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const MODEL = "emotion2vec";
const SEGMENTS_MODEL = "emotion2vec_segments";
const STREAM_MODEL = "emotion2vec_stream";
const STREAM_LIMIT = "its limit of"; // the stream model's answer when a stream has sent the most one may take
const USAGE = "usage: node score.js --url HOST:PORT --root-cert FILE --token-file FILE [--segments | --stream] clip.wav";

class UserError extends Error {}

// The samples of a 16 kHz mono 16-bit PCM WAV as float32 little-endian bytes (sample / 32768), as the model
// takes them in raw_input_contents.
function readWav(file) {
  const wav = fs.readFileSync(file);
  if (wav.toString("latin1", 0, 4) !== "RIFF" || wav.toString("latin1", 8, 12) !== "WAVE") {
    throw new UserError(`${file} is not a WAV file`);
  }
  let fmt = null;
  for (let at = 12; at + 8 <= wav.length; ) {
    const id = wav.toString("latin1", at, at + 4);
    const size = wav.readUInt32LE(at + 4);
    const body = at + 8;
    if (id === "fmt ") {
      const tag = wav.readUInt16LE(body); // 1: PCM; 0xFFFE: extensible, its sub-format at byte 24
      fmt = {
        pcm: tag === 1 || (tag === 0xfffe && wav.readUInt16LE(body + 24) === 1),
        channels: wav.readUInt16LE(body + 2),
        rate: wav.readUInt32LE(body + 4),
        bits: wav.readUInt16LE(body + 14),
      };
    } else if (id === "data") {
      if (!fmt || !fmt.pcm || fmt.channels !== 1 || fmt.rate !== 16000 || fmt.bits !== 16) {
        const got = fmt ? `${fmt.pcm ? "PCM" : "not PCM"}, ${fmt.channels} channel(s), ${fmt.rate} Hz, ${fmt.bits} bits` : "no fmt chunk";
        throw new UserError(`${file}: need 16 kHz mono 16-bit PCM (got ${got}); convert it, e.g. ` +
          `ffmpeg -i ${file} -ac 1 -ar 16000 -c:a pcm_s16le out.wav`);
      }
      const n = Math.floor(Math.min(size, wav.length - body) / 2);
      const raw = Buffer.alloc(4 * n);
      for (let i = 0; i < n; i++) raw.writeFloatLE(wav.readInt16LE(body + 2 * i) / 32768, 4 * i);
      return raw;
    }
    at = body + size + (size % 2); // chunks are padded to an even size
  }
  throw new UserError(`${file} holds no audio data`);
}

function connect(url, rootCert, tokenFile) {
  const dir = path.join(__dirname, "proto"); // Triton's own protos, see README.md
  const definition = protoLoader.loadSync(path.join(dir, "grpc_service.proto"), {
    includeDirs: [dir], keepCase: true, longs: Number, defaults: true,
  });
  const { GRPCInferenceService } = grpc.loadPackageDefinition(definition).inference;
  const token = fs.readFileSync(tokenFile, "utf8").trim().split(/\s+/)[0];
  const bearer = grpc.credentials.createFromMetadataGenerator((_, callback) => {
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${token}`); // sent only over TLS
    callback(null, metadata);
  });
  const tls = grpc.credentials.createSsl(fs.readFileSync(rootCert)); // the gateway's certificate (or its CA)
  return new GRPCInferenceService(url, grpc.credentials.combineChannelCredentials(tls, bearer));
}

// client.method(request) as a promise, with a deadline
const call = (client, method, request) =>
  new Promise((resolve, reject) =>
    client[method](request, { deadline: Date.now() + 60_000 }, (error, response) =>
      error ? reject(error) : resolve(response)));

// The top label of scores[0..n) and its score.
function top(labels, score) {
  const best = labels.reduce((a, label, i) => (score(i) > score(a) ? i : a), 0);
  return [labels[best], score(best)];
}

// Print the segments of one answer of the segments or stream model, "START-END EMOTION CONFIDENCE" each, and
// return its STATE (raw BYTES: a 4-byte length, then the bytes; length 0 when there is none) and RESUME_AT.
function printSegments(labels, response) {
  const output = (name) => response.raw_output_contents[response.outputs.findIndex((o) => o.name === name)];
  const times = output("SEGMENT_TIMES"); // [S, 2] float64 seconds
  const scores = output("SEGMENT_SCORES"); // [S, labels] float32
  for (let i = 0; i < times.length / 16; i++) {
    const [label, score] = top(labels, (k) => scores.readFloatLE(4 * (i * labels.length + k)));
    console.log(`${times.readDoubleLE(16 * i)}-${times.readDoubleLE(16 * i + 8)} ${label} ${score}`);
  }
  return { state: output("STATE"), resumeAt: Number(output("RESUME_AT").readBigInt64LE(0)) };
}

// The recording's speech segments: it goes in pieces of at most max_seconds; each answer gives the segments
// closed so far, the STATE to send back with the next piece and RESUME_AT, the sample that piece starts at.
async function printTimeline(client, labels, maxSeconds, audio) {
  const pieceBytes = 4 * Math.floor(maxSeconds * 16000);
  let start = 0; // in samples
  let state = null; // the previous answer's STATE
  for (;;) {
    const piece = audio.subarray(4 * start, 4 * start + pieceBytes);
    const last = 4 * start + pieceBytes >= audio.length;
    const inputs = [{ name: "AUDIO", datatype: "FP32", shape: [1, piece.length / 4] }];
    const raw = [piece];
    if (state) {
      inputs.push({ name: "STATE", datatype: "BYTES", shape: [1] });
      raw.push(state);
    }
    const response = await call(client, "ModelInfer", {
      model_name: SEGMENTS_MODEL, inputs, raw_input_contents: raw, parameters: { last_piece: { bool_param: last } },
    });
    const next = printSegments(labels, response);
    if (last) return;
    start = next.resumeAt;
    state = next.state;
  }
}

// A live stream: the recording sent in chunks of the stream model's max_chunk_seconds on one bidirectional
// ModelStreamInfer call, as a microphone would send them, each segment printed as it closes. A stream that has
// sent the most audio one stream may take is refused; the next goes on from the last STATE, sending the audio
// again from RESUME_AT. (A live source would also reopen after a lost connection; see docs/api.md.)
// Flow control: each chunk gets one answer, and at most half the model's max_backlog_seconds of audio waits for
// its answer (the model refuses a stream that sends faster than it is scored).
async function printStream(client, labels, parameters, audio) {
  const chunkSeconds = Number(parameters.max_chunk_seconds.string_value);
  const window = Math.max(1, Math.floor(Number(parameters.max_backlog_seconds.string_value) / 2 / chunkSeconds));
  const chunkBytes = 4 * Math.floor(chunkSeconds * 16000);
  let resume = { from: 0, state: null }; // the sample the next stream starts at, and its STATE
  while (resume) resume = await oneStream(client, labels, chunkBytes, window, audio, resume);
}

// One stream from resume.from on: resolves null at the end, or where the next stream goes on from.
function oneStream(client, labels, chunkBytes, window, audio, { from, state }) {
  return new Promise((resolve, reject) => {
    const starts = []; // the byte each chunk starts at (one chunk, maybe empty, at least)
    for (let at = 4 * from; at < audio.length || starts.length === 0; at += chunkBytes) starts.push(at);
    const sequenceId = 1 + Math.floor(Math.random() * 2 ** 48); // the stream's correlation ID
    const stream = client.ModelStreamInfer();
    let sent = 0;
    let answered = 0;
    let resume = { from, state };
    const send = () => {
      const piece = audio.subarray(starts[sent], starts[sent] + chunkBytes);
      const inputs = [{ name: "AUDIO", datatype: "FP32", shape: [1, piece.length / 4] }];
      const raw = [piece];
      if (sent === 0 && state) {
        inputs.push({ name: "STATE", datatype: "BYTES", shape: [1] });
        raw.push(state);
      }
      const parameters = {
        sequence_id: { int64_param: sequenceId },
        sequence_start: { bool_param: sent === 0 },
        sequence_end: { bool_param: sent === starts.length - 1 },
      };
      stream.write({ model_name: STREAM_MODEL, inputs, raw_input_contents: raw, parameters });
      sent += 1;
    };
    stream.on("data", ({ error_message: error, infer_response: response }) => {
      if (error) {
        stream.cancel();
        error.includes(STREAM_LIMIT) ? resolve(resume) : reject(new UserError(`the stream model: ${error}`));
        return;
      }
      const next = printSegments(labels, response);
      if (next.resumeAt >= 0) resume = { from: next.resumeAt, state: next.state };
      answered += 1;
      if (answered === starts.length) {
        stream.end();
        resolve(null);
      } else if (sent < starts.length) {
        send(); // one answered, one more goes
      }
    });
    stream.on("error", (error) => error.code !== grpc.status.CANCELLED && reject(error));
    while (sent < Math.min(window, starts.length)) send();
  });
}

async function main() {
  let options;
  try {
    options = parseArgs({
      options: {
        url: { type: "string" }, "root-cert": { type: "string" }, "token-file": { type: "string" },
        segments: { type: "boolean" }, stream: { type: "boolean" },
      },
      allowPositionals: true,
    });
  } catch (error) {
    throw new UserError(`${error.message}\n${USAGE}`);
  }
  const { values, positionals } = options;
  if (!values.url || !values["root-cert"] || !values["token-file"] || positionals.length !== 1 ||
      (values.segments && values.stream)) {
    throw new UserError(USAGE);
  }
  const audio = readWav(positionals[0]);
  const client = connect(values.url, values["root-cert"], values["token-file"]);
  try {
    // the labels, in score order, are a parameter of the model's config
    const { config } = await call(client, "ModelConfig", { name: MODEL });
    const labels = config.parameters.labels.string_value.split(",");
    if (values.segments) {
      await printTimeline(client, labels, Number(config.parameters.max_seconds.string_value), audio);
      return;
    }
    if (values.stream) {
      const stream = (await call(client, "ModelConfig", { name: STREAM_MODEL })).config;
      await printStream(client, labels, stream.parameters, audio);
      return;
    }
    const response = await call(client, "ModelInfer", {
      model_name: MODEL,
      inputs: [{ name: "AUDIO", datatype: "FP32", shape: [1, audio.length / 4] }],
      raw_input_contents: [audio],
      outputs: [{ name: "SCORES" }],
    });
    const raw = response.raw_output_contents[response.outputs.findIndex((o) => o.name === "SCORES")];
    const scores = Object.fromEntries(labels.map((label, i) => [label, raw.readFloatLE(4 * i)]));
    const [label, score] = top(labels, (i) => raw.readFloatLE(4 * i));
    console.log(JSON.stringify(scores, null, 2));
    console.log(`top: ${label} ${score.toFixed(4)}`);
  } finally {
    client.close();
  }
}

main().catch((error) => {
  if (error instanceof UserError) {
    console.error(`score.js: ${error.message}`);
  } else if (error.code === grpc.status.UNAUTHENTICATED) {
    console.error(`score.js: the server refused the token in the token file (gRPC status 16: ${error.details})`);
  } else if (error.code !== undefined && error.details !== undefined) {
    console.error(`score.js: gRPC status ${error.code} (${grpc.status[error.code]}): ${error.details}`);
  } else if (error.syscall) {
    console.error(`score.js: ${error.message}`); // a file that cannot be read
  } else {
    throw error;
  }
  process.exitCode = 1;
});
