// Feeds a file of Responses SSE frames to @ai-sdk/openai's responses model (doStream) and
// prints, one JSON object per line, the request body it sent, then the stream parts it made.
import { readFileSync } from 'node:fs';
import { createOpenAI } from '@ai-sdk/openai';

const frames = readFileSync(process.argv[2]);
const provider = createOpenAI({
  apiKey: 'sk-test',
  baseURL: 'http://proxy.test/v1',
  fetch: async (_url, init) => {
    console.log(JSON.stringify({ type: 'request', body: JSON.parse(init.body) }));
    return new Response(frames, { status: 200, headers: { 'content-type': 'text/event-stream' } });
  },
});
const model = provider.responses('deepseek-v4-flash');
// a second turn: the model called a tool after thinking, the tool answered
const prompt = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: [{ type: 'text', text: 'Weather in Paris?' }] },
  {
    role: 'assistant',
    content: [
      { type: 'reasoning', text: 'Call the tool.' },
      { type: 'tool-call', toolCallId: 'call_a', toolName: 'weather', input: { city: 'Paris' } },
    ],
  },
  {
    role: 'tool',
    content: [
      { type: 'tool-result', toolCallId: 'call_a', toolName: 'weather', output: { type: 'text', value: '18 C' } },
    ],
  },
];
const tools = [
  {
    type: 'function',
    name: 'weather',
    description: 'Weather in a city.',
    inputSchema: { type: 'object', properties: { city: { type: 'string' } } },
  },
];
try {
  const { stream } = await model.doStream({ prompt, tools });
  for await (const part of stream) {
    const value =
      part.type === 'error' ? { type: 'error', message: String(part.error?.message ?? part.error) } : part;
    console.log(JSON.stringify(value));
  }
} catch (error) {
  console.log(JSON.stringify({ type: 'thrown', message: String(error?.message ?? error) }));
}
