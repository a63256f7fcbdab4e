// Feeds a file of Responses SSE frames to @ai-sdk/openai's responses model (doStream) and
// prints the stream parts it produces, one JSON object per line.
import { readFileSync } from 'node:fs';
import { createOpenAI } from '@ai-sdk/openai';

const frames = readFileSync(process.argv[2]);
const provider = createOpenAI({
  apiKey: 'sk-test',
  baseURL: 'http://proxy.test/v1',
  fetch: async () =>
    new Response(frames, { status: 200, headers: { 'content-type': 'text/event-stream' } }),
});
const model = provider.responses('deepseek-v4-flash');
try {
  const { stream } = await model.doStream({
    prompt: [{ role: 'user', content: [{ type: 'text', text: 'hi' }] }],
  });
  for await (const part of stream) {
    const value = part.type === 'error' ? { type: 'error', message: String(part.error?.message ?? part.error) } : part;
    console.log(JSON.stringify(value));
  }
} catch (error) {
  console.log(JSON.stringify({ type: 'thrown', message: String(error?.message ?? error) }));
}
