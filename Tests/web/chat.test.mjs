// Tests for Public/js/chat.js's reading of an answer's `end` event: a final message the view can show,
// or null, which sends the page to ask the server instead of announcing "Answer complete".
// Run: node --test Tests/web/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { endMessage } from '../../Public/js/chat.js';

test('a final message is read', () => {
  const message = { id: 'm1', role: 'assistant', status: 'complete', text: 'Hello' };
  assert.deepEqual(endMessage(JSON.stringify(message)), message);
  assert.equal(endMessage('{"id":"m1","role":"assistant","status":"failed","error":"upstream"}').status, 'failed');
});

test('unreadable data is no message', () => {
  for (const data of ['', 'not json', '{"id":"m1"', 'null', '42', '"complete"', 'true', '[]',
                      '[{"status":"complete"}]', '{}', '{"status":3}', undefined, null]) {
    assert.equal(endMessage(data), null, `${data}`);
  }
});

test('an answer waiting for the model says how many go first', async () => {
  const { queueText } = await import('../../Public/js/chat.js');
  assert.equal(queueText(0), 'Waiting for the model — you are next');
  assert.equal(queueText(1), 'Waiting for the model — 1 ahead of you');
  assert.equal(queueText(12), 'Waiting for the model — 12 ahead of you');
  assert.equal(queueText(undefined), 'Waiting for the model — you are next');
});
