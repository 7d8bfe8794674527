// Greedy decode of a GGUF by llama.cpp through node-llama-cpp and its prebuilt llama.cpp binaries (npm), for
// benchmarks/gguf_decode.py --llama_cpp node where llama-cpp-python is not built:
//     node benchmarks/llama_cpp_greedy.mjs MODEL.gguf '["prompt", ...]' NEW_TOKENS REPEATS THREADS
// prints JSON {tokens: [prompt ids per prompt], new: [greedy ids per prompt, EOS not included], seconds: [REPEATS
// timed decodes after the first prompt, after one untimed], produced: [new tokens of each timed decode: NEW_TOKENS,
// or fewer where llama.cpp stopped at EOS]}. ES modules resolve packages from the script's folder, so
// gguf_decode.py copies this file into the folder where node-llama-cpp was installed (npm install node-llama-cpp@3.22.1).
import {getLlama, LlamaLogLevel} from "node-llama-cpp";
const [modelPath, promptsJson, newTokens, repeats, threads] = process.argv.slice(2);
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({threads: Number(threads), sequences: 1});
const sequence = context.getSequence();
async function greedy(ids, n) {
  await sequence.clearHistory();
  const out = [];
  for await (const token of sequence.evaluate(ids, {temperature: 0})) {
    out.push(token);
    if (out.length >= n) break;
  }
  return out;
}
const prompts = JSON.parse(promptsJson);
const tokens = prompts.map((p) => Array.from(model.tokenize(p, true)));
const news = [];
for (const ids of tokens) news.push(await greedy(ids, Number(newTokens)));
const seconds = [], produced = [];
for (let i = 0; i < Number(repeats) + 1; i++) {
  const start = performance.now();
  const out = await greedy(tokens[0], Number(newTokens));
  if (i > 0) {
    seconds.push((performance.now() - start) / 1000);
    produced.push(out.length);
  }
}
console.log(JSON.stringify({tokens, new: news, seconds, produced}));
process.exit(0);
