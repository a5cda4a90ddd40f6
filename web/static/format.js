// Formatting for people: times, days, sizes, names, and the daemon's
// errors in words.

import {confusables} from './confusables.js';

const timeFmt = new Intl.DateTimeFormat(undefined, {hour: '2-digit', minute: '2-digit'});
const dayFmt = new Intl.DateTimeFormat(undefined, {weekday: 'long', day: 'numeric', month: 'long', year: 'numeric'});
const fullFmt = new Intl.DateTimeFormat(undefined, {dateStyle: 'medium', timeStyle: 'medium'});

export const clock = ms => timeFmt.format(ms);
export const full = ms => fullFmt.format(ms);

// dayKey names the local calendar day of ms.
export function dayKey(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

// dayLabel says "Today", "Yesterday", or the date.
export function dayLabel(ms, now = Date.now()) {
  if (dayKey(ms) === dayKey(now)) return 'Today';
  if (dayKey(ms) === dayKey(now - 86400000)) return 'Yesterday';
  return dayFmt.format(ms);
}

export function ago(ms, now = Date.now()) {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function bytes(n) {
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(n % 1024 ? 1 : 0)} KiB`;
  return `${n} bytes`;
}

export function seconds(ms) {
  const s = ms / 1000;
  return s < 10 ? `${s.toFixed(1)} s` : `${Math.round(s)} s`;
}

// lookalike is a name as the page shows it, for telling names apart:
// without the characters shown as nothing or as U+FFFD (default-ignorable
// ones, such as the Hangul filler U+3164, which names refuse since session
// 20 but a daemon of before, or a rogue daemon or registry, may still
// send: dropped, "alice" with one wears its key beside alice; and every
// control and format character, as the CLI drops them, the Arabic number
// sign U+0600 and U+FFF9 among them though they are not default-ignorable),
// each run of blanks one space (and of the symbols drawn as an empty cell:
// the Braille blank U+2800, the null notehead U+1D159; cli/names.go's
// blanks), no blank at either end, each letter that
// looks like a Latin one written as that one (a Cyrillic а as a:
// confusables.js, the CLI's table; else a character's compatibility
// decomposition, so fullwidth forms, ligatures and the mathematical
// alphabets are the letters they are drawn as), and accents in one form
// (NFD: é as one character or two is one letter). The CLI's lookalike
// (cli/names.go) does the same.
const confusable = ch => confusables.get(ch) ??
  Array.from(ch.normalize('NFKD'), c => confusables.get(c) ?? c).join('');
export const lookalike = name =>
  Array.from(name.normalize('NFD'), confusable).join('').normalize('NFD')
    .replace(/[\p{Default_Ignorable_Code_Point}\p{Cf}\p{Cc}]/gu, '').replace(/[\s\u2800\u{1D159}]+/gu, ' ').trim();

// shown is a name as the page shows it where a registry chose it (a
// rogue one may list anything): each control or format character (a
// bidirectional override would turn the text around it; the daemons
// refuse both in names) and each line or paragraph separator becomes
// U+FFFD, as the CLI shows such names (cli/shown.go).
export const shown = name => name.replace(/[\p{Cc}\p{Cf}\u2028\u2029]/gu, '\uFFFD');

// plain is peer text for a native notification's title or body. The
// Notifications API takes both as text, but the freedesktop notification
// spec leaves the body to the desktop's notification daemon to read as
// markup (its body-markup capability: <b>, <i>, <u>, <a href>, <img src>,
// entities), and some daemons read the title so too. Chromium escapes a
// body for a daemon that says it reads markup; one that reads it without
// saying so, or another browser, would show a peer's <b> bold, a link or
// an image of the peer's choosing, or nothing for text that is no valid
// markup ("1 < 2"). So '<', '>' and '&' are given as their small forms
// (U+FE64, U+FE65, U+FE60), which read alike and are markup nowhere: as
// entities (&lt;) they would show as such where the text is read as
// text, and twice escaped where the browser escapes too.
const unmarked = {'<': '\uFE64', '>': '\uFE65', '&': '\uFE60'};
export const plain = text => text.replace(/[<>&]/g, c => unmarked[c]);

// notification is the title and body of the native notification for
// message d of group g (undefined if the page knows no such group): who
// wrote it where, the names as the page shows them, and the message's
// first 200 characters (whole ones: a cut between a surrogate pair's
// halves would give the daemon half a character), each through plain.
export function notification(g, d) {
  return {
    title: plain(`${shown(d.name)} in ${g ? shown(g.name) : 'huddle'}`),
    body: plain(Array.from(d.text.slice(0, 400)).slice(0, 200).join('')),
  };
}

// quoted is a name shown among others: through shown, in double quotes,
// a quote or backslash in it escaped, so that a name holding '", "' does
// not pass for two (the CLI's strconv.Quote).
export const quoted = name => JSON.stringify(shown(name));

// allNames is a group's names: the one it is shown under, then the others
// registries list it under.
export const allNames = g => [g.name, ...(g.other_names || [])];

// Names: who shares a display name, or one that looks the same, with
// another key.
export class Names {
  constructor() { this.keys = new Map(); } // lookalike(name) -> Set of fingerprints
  add(name, fp) {
    name = lookalike(name);
    let s = this.keys.get(name);
    if (!s) this.keys.set(name, s = new Set());
    if (s.has(fp)) return false;
    s.add(fp);
    return s.size === 2; // a name became ambiguous
  }
  ambiguous(name) {
    const s = this.keys.get(lookalike(name));
    return !!s && s.size > 1;
  }
}

// short is the short form of a fingerprint, as huddle prints it.
export const short = fp => fp.slice(0, 9);

// describe turns an API error into what a person should read.
export function describe(err, group) {
  const g = group ? shown(group.name) : 'the group';
  switch (err.code) {
    case 'not_member':
      return `You are not a member of ${g}: join it to read and send.`;
    case 'rate_limited':
      return `Slow down: ${g} limits how fast each member sends. You can send again in ${seconds(err.retryAfterMS || 1000)}.`;
    case 'too_large':
      return group && group.max_message_bytes
        ? `Too large: messages in ${g} may be at most ${bytes(group.max_message_bytes)}.`
        : `Too large for ${g}.`;
    case 'unauthorized':
      return `${g} is private and the secret is wrong or missing: ask a member for it.`;
    case 'unreachable':
      return `${g}'s daemon cannot be reached right now; huddle keeps trying.`;
    case 'unavailable':
      return `${g}'s daemon is busy or restarting; try again in a moment.`;
    case 'wrong_key':
      return `${g}'s daemon answered with another key than the one its registry lists: the listing may be out of date (the daemon was reinstalled or moved) or someone is impersonating it. Try again in a few seconds.`;
    case 'not_found':
      return `No registry lists ${g} right now (its daemon stopped or is restarting).`;
    case 'epoch_mismatch':
      return `${g}'s history was reset (its daemon restarted).`;
    case 'clash':
      return err.message;
    case 'offline':
    case 'said':
      return err.message;
    case 'no_secret':
      return 'This page needs the link huddle web printed when it started (its secret is new each time huddle web starts). Open that link.';
    case 'bad_request':
      return err.message;
  }
  return `Something went wrong: ${err.message}`;
}

// mentions reports whether text mentions name as a word (with or without @).
export function mentions(text, name) {
  if (!name) return false;
  const esc = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`(^|[^\\p{L}\\p{N}_])@?${esc}(?![\\p{L}\\p{N}_])`, 'iu').test(text);
}

// offline says that a joined group is offline: no registry lists it (its
// daemon stopped and deregistered it, or its lease lapsed), short for the
// head of its conversation, and why, for its tooltip. huddle web keeps its
// watch trying, and it comes back by itself once listed.
export function offline(group) {
  const g = group ? shown(group.name) : 'the group';
  return {text: `offline: no registry lists ${g} right now`,
    title: `its daemon stopped or is restarting, or its lease lapsed: huddle web keeps trying, and ${g} comes back by itself once listed`};
}

// reconnecting says why a group's watch is reconnecting (err: the API
// error of the status event, or null).
export function reconnecting(err, group) {
  const g = group ? shown(group.name) : 'the group';
  switch (err && err.code) {
    case 'unavailable': return `reconnecting… ${g}'s daemon is restarting or busy`;
    case 'unreachable': return `reconnecting… ${g}'s daemon cannot be reached`;
    case 'wrong_key': return `reconnecting… ${g}'s daemon answers with another key than its registry lists`;
    case 'not_found': return `reconnecting… no registry lists ${g} right now`;
  }
  return `reconnecting to ${g}'s daemon…`;
}
