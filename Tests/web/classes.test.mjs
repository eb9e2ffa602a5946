// Tests for the class notice of Public/js/classes.js: what a student is told about their class's policy.
// Run: node --test Tests/web/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closedReason, describeClass } from '../../Public/js/classes.js';

const NOW = new Date('2026-03-10T12:00:00Z');

function cls(policy = {}, fields = {}) {
  return {
    id: 'c1', name: 'Stats 101', is_active: true, starts_at: null, ends_at: null,
    policy: { allowed_models: [], system_prompt_locked: false, images_allowed: true, transcript_visibility: 'usage', ...policy },
    ...fields,
  };
}

test('each transcript visibility is explained', () => {
  assert.match(describeClass(cls({ transcript_visibility: 'full' }), NOW), /instructor can read the conversations.*when and from where you sign in/);
  assert.match(describeClass(cls({ transcript_visibility: 'usage' }), NOW), /sees how much you use GSE AI .*when and from where you sign in, not what you write/);
  assert.match(describeClass(cls({ transcript_visibility: 'off' }), NOW), /sees neither your conversations, nor how much you use GSE AI, nor when or from where you sign in/);
});

test('an unknown visibility is described as full, never as private', () => {
  assert.match(describeClass(cls({ transcript_visibility: 'something-new' }), NOW), /can read the conversations/);
});

test('the name and the limits are stated', () => {
  const text = describeClass(cls({ daily_token_budget: 20000, requests_per_minute: 6, images_allowed: false,
                                   system_prompt: 'Be brief.', system_prompt_locked: true }), NOW);
  assert.ok(text.startsWith('Class: Stats 101.'), text);
  assert.match(text, /Daily limit: 20,000 tokens\./);
  assert.match(text, /At most 6 requests a minute\./);
  assert.match(text, /Images are not allowed\./);
  assert.match(text, /The class sets the system prompt\./);
});

test('no limits, no limit sentences', () => {
  const text = describeClass(cls(), NOW);
  assert.doesNotMatch(text, /Daily limit|requests a minute|Images are not|sets the system prompt/);
  assert.equal(closedReason(cls(), NOW), '');
});

test('why a class takes no requests', () => {
  assert.match(closedReason(cls({}, { is_active: false }), NOW), /closed it/);
  assert.match(closedReason(cls({}, { is_active: false, starts_at: '2026-04-01T00:00:00Z' }), NOW), /opens on Apr 1, 2026/);
  assert.match(closedReason(cls({}, { is_active: false, ends_at: '2026-03-01T00:00:00Z' }), NOW), /ended on Mar 1, 2026/);
  assert.match(describeClass(cls({}, { is_active: false }), NOW), /^Class: Stats 101\. Your instructor has closed it/);
});
