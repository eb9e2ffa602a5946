// A student's classes in the sidebar: the picker (the chosen class's policy applies to new chats and to the
// student's API keys), joining with a code, and the notice that says what the class's policy means for them
// (above all, how much of their chats their instructor sees). Staff are in no class and see none of this.

import { api } from './api.js';
import { announce, byId, h as el } from './dom.js';

// What the instructor sees, as the server allows it: usage and account activity (when and from where you
// signed in, your API keys) only from `usage` on, and never the account of a student who is also in another
// instructor's class; nobody but an administrator can set the password of an account in use.
const VISIBILITY = {
  off: 'Your instructor sees neither your conversations, nor how much you use GSE AI, nor when or from where you sign in.',
  usage: 'Your instructor sees how much you use GSE AI in this class (requests and tokens) and when and from where you sign in, not what you write.',
  full: 'Your instructor can read the conversations you have in this class, and sees how much you use GSE AI and when and from where you sign in.',
};

const day = value => new Date(value).toLocaleDateString('en-US', { year: 'numeric', month: 'short', day: 'numeric', timeZone: 'UTC' });
const count = value => Number(value).toLocaleString('en-US');

/** Why the class takes no requests now, or '' when it does. */
export function closedReason(cls, now = new Date()) {
  if (cls.is_active) return '';
  if (cls.starts_at && new Date(cls.starts_at) > now) return `It opens on ${day(cls.starts_at)}; until then you cannot chat in it.`;
  if (cls.ends_at && new Date(cls.ends_at) <= now) return `It ended on ${day(cls.ends_at)}; you cannot chat in it any more.`;
  return 'Your instructor has closed it; you cannot chat in it until it is opened again.';
}

/** The sentences that tell a student what the class's policy means for them. */
export function describeClass(cls, now = new Date()) {
  const policy = cls.policy || {};
  const parts = [`Class: ${cls.name}.`];
  const closed = closedReason(cls, now);
  if (closed) parts.push(closed);
  // An unknown visibility is described as the widest one: a student must never believe in privacy they lack.
  parts.push(VISIBILITY[policy.transcript_visibility] || VISIBILITY.full);
  if (policy.daily_token_budget != null) parts.push(`Daily limit: ${count(policy.daily_token_budget)} tokens.`);
  if (policy.requests_per_minute != null) parts.push(`At most ${count(policy.requests_per_minute)} requests a minute.`);
  if (policy.images_allowed === false) parts.push('Images are not allowed.');
  if (policy.system_prompt_locked && policy.system_prompt) parts.push('The class sets the system prompt.');
  return parts.join(' ');
}

/**
 * Wires the class box. `onChange()` runs after the student chose or joined a class (the models and the rules
 * of new chats change with it).
 */
export function createClassPicker({ onChange }) {
  const box = byId('class-box'), select = byId('class-select'), toggle = byId('join-toggle');
  const form = byId('join-form'), code = byId('join-code'), error = byId('class-error'), none = byId('no-class');
  const invitationList = byId('invitations');
  let classes = [], applied = null, enabled = false;

  /** Shows the classes that invited the student, each with its rules, to accept or decline. */
  function showInvitations(list) {
    invitationList.hidden = !list.length;
    invitationList.replaceChildren(...list.map(({ class: cls }) => {
      const accept = el('button', { type: 'button', class: 'primary small-button', 'data-testid': 'invitation-accept' }, 'Accept');
      const decline = el('button', { type: 'button', class: 'small-button', 'data-testid': 'invitation-decline' }, 'Decline');
      const answer = async (accepting) => {
        error.textContent = '';
        accept.disabled = decline.disabled = true;
        try {
          if (accepting) await api.acceptInvitation(cls.id); else await api.declineInvitation(cls.id);
          take(await api.myClasses());
          showInvitations((await api.invitations()).data || []);
          announce(accepting ? `You joined ${cls.name}.` : `Invitation to ${cls.name} declined.`);
          if (accepting) onChange();
        } catch (failure) {
          error.textContent = failure.message;
          accept.disabled = decline.disabled = false;
        }
      };
      accept.addEventListener('click', () => answer(true));
      decline.addEventListener('click', () => answer(false));
      return el('li', { 'data-testid': 'invitation', 'data-class-id': cls.id },
        el('p', { class: 'small' }, `Your instructor invites you to the class ${cls.name}.`),
        el('p', { class: 'hint', 'data-testid': 'invitation-notice' }, describeClass(cls)),
        el('div', { class: 'class-row' }, accept, decline));
    }));
  }

  function take(mine) {
    classes = mine.data || [];
    applied = mine.applied_class_id || null;
    select.replaceChildren(...classes.map(cls => new Option(cls.is_active ? cls.name : `${cls.name} (closed)`, cls.id)));
    select.disabled = !classes.length;
    none.hidden = classes.length > 0;
    if (applied) select.value = applied;
  }

  function showJoin(open) {
    form.hidden = !open;
    toggle.setAttribute('aria-expanded', String(open));
    if (open) code.focus();
  }

  toggle.addEventListener('click', () => showJoin(form.hidden));
  form.addEventListener('keydown', event => { if (event.key === 'Escape') { showJoin(false); toggle.focus(); } });

  select.addEventListener('change', async () => {
    const previous = applied;
    error.textContent = '';
    select.disabled = true;
    try {
      take(await api.setActiveClass(select.value));
      announce(`Class ${select.selectedOptions[0]?.text || ''} chosen.`);
      onChange();
    } catch (failure) {
      error.textContent = `The class was not changed: ${failure.message}`;
      select.value = previous || '';
    } finally {
      select.disabled = !classes.length;
    }
  });

  form.addEventListener('submit', async event => {
    event.preventDefault();
    const value = code.value.trim();
    error.textContent = '';
    if (!value) { error.textContent = 'Enter the join code your instructor gave you.'; code.focus(); return; }
    const button = form.querySelector('button');
    button.disabled = true;
    try {
      const joined = await api.joinClass(value);
      take(await api.myClasses());
      code.value = '';
      showJoin(false);
      announce(`You joined ${joined.name}.`);
      onChange();
    } catch (failure) {
      error.textContent = failure.message;
      code.focus();
    } finally {
      button.disabled = false;
    }
  });

  return {
    /** Shows the box to students; `joinCode` (from a join link) fills in the join form. */
    async start(user, joinCode) {
      enabled = user.role === 'student';
      box.hidden = !enabled;
      if (!enabled) return;
      const [mine, invited] = await Promise.all([api.myClasses(), api.invitations()]);
      take(mine);
      showInvitations(invited.data || []);
      if (joinCode) { code.value = joinCode; showJoin(true); }
    },

    /** Reads the classes again (a class may have been closed or changed since). */
    async reload() {
      if (enabled) take(await api.myClasses());
    },

    /**
     * The class whose policy applies to `conversation`: the one it was started in while the student still
     * belongs to it, else the chosen one (as the server decides). `null` for staff and students in no class.
     */
    classFor(conversation) {
      if (!enabled) return null;
      return classes.find(cls => cls.id === conversation?.class_id) || classes.find(cls => cls.id === applied) || null;
    },
  };
}
