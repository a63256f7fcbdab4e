// Real node clients of a streamproxy serve process. Usage: node clients.mjs KIND BASE_URL
// Prints one JSON line: what the client made of the answer.
//   ai-sdk      the AI SDK's default openai("...") provider (the Responses API), streamText
//   ai-sdk-chat the AI SDK's openai.chat("...") provider (chat completions), streamText
//   openai      the openai npm SDK, chat.completions.create({stream: true})
//   openai-responses  the openai npm SDK, responses.create({stream: true})
import { createOpenAI } from '@ai-sdk/openai';
import { streamText } from 'ai';
import OpenAI from 'openai';

const [kind, baseURL] = process.argv.slice(2);
const model = 'deepseek-v4-flash';
const prompt = "What's the weather in Paris?";

async function aiSdk(chat) {
  const provider = createOpenAI({ baseURL, apiKey: 'unused' });
  const result = streamText({ model: chat ? provider.chat(model) : provider(model), prompt });
  let text = '';
  for await (const part of result.fullStream) {
    if (part.type === 'text-delta') text += part.text;
    if (part.type === 'error') throw part.error;
  }
  return { text, finishReason: await result.finishReason, usage: await result.usage };
}

async function openaiChat() {
  const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0 });
  const stream = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: prompt }], stream: true,
  });
  let text = '';
  const finishReasons = [];
  for await (const chunk of stream) {
    for (const choice of chunk.choices) {
      text += choice.delta.content ?? '';
      if (choice.finish_reason) finishReasons.push(choice.finish_reason);
    }
  }
  return { text, finishReasons };
}

async function openaiResponses() {
  const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0 });
  const stream = await client.responses.create({ model, input: prompt, stream: true });
  let text = '';
  const types = [];
  let completed = null;
  for await (const event of stream) {
    types.push(event.type);
    if (event.type === 'response.output_text.delta') text += event.delta;
    if (event.type === 'response.completed') completed = event.response;
  }
  return { text, types, status: completed?.status, id: completed?.id };
}

const run = { 'ai-sdk': () => aiSdk(false), 'ai-sdk-chat': () => aiSdk(true), openai: openaiChat,
  'openai-responses': openaiResponses }[kind];
console.log(JSON.stringify(await run()));
