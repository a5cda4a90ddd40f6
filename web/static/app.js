// huddle web's page: the group list, a conversation per group, members,
// and the event stream that keeps them live. Plain ES modules, no build.

import {api, APIError, Stream, newID} from './api.js';
import {VList} from './vlist.js';
import * as fmt from './format.js';

const $ = id => document.getElementById(id);

const firstPage = 500;     // messages loaded when a group opens
const olderPage = 1000;    // messages per page scrolling back
const keepLive = 1000;     // messages kept when following the end
const trimAt = 1500;       // ...trimmed to keepLive past this
const backlogFrom = 800;   // px from the top at which older pages load
const membersEvery = 20000; // ms between members refreshes while shown
const doubtTries = 8;       // tries of a message in doubt before the page stops, unless its daemon checks them (1+2+4+8x4 s apart)
const dedupFloor = 65536;  // messages a group's dedup window holds at least (PROTOCOL.md §8.5)

const state = {
  me: null,            // {fingerprint, short}
  groups: new Map(),   // uuid -> group, as GET /api/groups lists it
  registries: [],
  convs: new Map(),    // uuid -> Conv
  active: null,        // uuid of the open group
  drafts: new Map(),   // uuid -> the text typed for a group not open now
  watched: '',         // the joined groups the stream follows, sorted, joined
  joining: new Set(),  // uuids of the groups whose join is under way
  live: false,         // the event stream (the page's link to huddle web) is live
  fatal: false,
};
// For debugging from the browser's console (and the browser tests).
// retryUnit paces a pending message's retries, in ms: 1, 2 and 4 units
// after its first three tries, then every 8. Nothing in the page changes
// it: the browser tests set it to run the same tries in less time.
window.huddle = {state, retryUnit: 1000};

// Conv is one group's conversation as the page holds it.
class Conv {
  constructor(id) {
    this.id = id;
    this.items = [{k: 'top', key: 'top', ei: -1, seq: 0}];
    this.keys = new Set(['top']);
    this.epochs = [];       // every log epoch seen, in order
    this.epoch = '';        // the stream's cursor: epoch (a string: 64 bits)...
    this.cursor = 0;        // ...and last sequence delivered
    this.cursorKnown = false;
    this.loaded = false;    // its last page was fetched
    this.loading = false;
    this.pageEpoch = '';    // the epoch pages are fetched from
    this.lowest = 0;        // lowest sequence loaded of pageEpoch
    this.moreBefore = false;
    this.unread = 0;
    this.counted = false;   // the unread count was set up (setGroups)
    this.readCount = 0;     // markRead calls: a count begun before one is stale
    this.status = '';       // the watch: live, reconnecting, ended
    this.statusError = null;
    this.members = [];
    this.myName = '';
    this.names = new fmt.Names();
    this.pending = new Map(); // message ID -> pending item
    this.outbox = [];       // pending items not yet stored or failed, in the order typed
    this.sending = false;   // pump is sending the outbox
    this.seqCounter = 0;
    // sendAfter: whether the group's daemon checks a retry's position
    // (send_after), as huddle web last heard it say: a retry of a message
    // in doubt is then refused window_passed rather than stored twice, and
    // the page goes on retrying it past doubtTries. null (not known) while
    // the group is unreachable or not answered yet: the daemon that
    // answers next may be another, an older one. Session 22 kept the last
    // word of the daemon gone, and retried past doubtTries a daemon
    // replaced by an older one until huddle web had asked the new one;
    // past doubtTries, a retry now waits for the group's word (deliver).
    this.sendAfter = null;
  }

  epochIndex(epoch) {
    let i = this.epochs.indexOf(epoch);
    if (i < 0) { this.epochs.push(epoch); i = this.epochs.length - 1; }
    return i;
  }

  // insert adds items not held yet, in order: by epoch (in the order they
  // were seen), then sequence.
  insert(items) {
    const fresh = items.filter(it => !this.keys.has(it.key));
    if (fresh.length === 0) return false;
    for (const it of fresh) this.keys.add(it.key);
    fresh.sort(order);
    const last = this.items[this.items.length - 1];
    if (order(fresh[0], last) > 0) {
      for (const it of fresh) this.items.push(it);
      return true;
    }
    const out = [];
    let i = 0, j = 0;
    while (i < this.items.length || j < fresh.length) {
      if (j >= fresh.length || (i < this.items.length && order(this.items[i], fresh[j]) <= 0)) out.push(this.items[i++]);
      else out.push(fresh[j++]);
    }
    this.items = out;
    return true;
  }

  remove(key) {
    if (!this.keys.delete(key)) return;
    const i = this.items.findIndex(it => it.key === key);
    if (i >= 0) this.items.splice(i, 1);
  }

  // trim drops the oldest messages past trimAt, so a page left open on a
  // busy group keeps a bounded memory; scrolling up loads them again.
  trim() {
    const msgs = this.items.length;
    if (msgs <= trimAt) return false;
    const drop = this.items.splice(1, msgs - keepLive);
    for (const it of drop) this.keys.delete(it.key);
    const firstMsg = this.items.find(it => it.k === 'msg' && it.ei === this.epochs.indexOf(this.pageEpoch));
    if (firstMsg) this.lowest = firstMsg.seq;
    this.moreBefore = true;
    return true;
  }
}

function order(a, b) { return a.ei - b.ei || a.seq - b.seq; }

function conv(id) {
  let c = state.convs.get(id);
  if (!c) state.convs.set(id, c = new Conv(id));
  return c;
}

function messageItem(c, m) {
  return {k: 'msg', key: `m${m.epoch}:${m.seq}`, ei: c.epochIndex(m.epoch), epoch: m.epoch, seq: m.seq,
    ts: Date.parse(m.ts), id: m.id, from: m.from, name: m.name, text: m.text};
}

// ---- read positions, kept per key and group in localStorage ----

function readKey(id) { return `huddle.read.${state.me ? state.me.fingerprint : ''}.${id}`; }

function loadRead(id) {
  const v = localStorage.getItem(readKey(id));
  if (!v) return null;
  const [epoch, seq] = v.split(':');
  return {epoch, seq: Number(seq)};
}

function markRead(c) {
  c.unread = 0;
  c.readCount++;
  if (c.cursorKnown) localStorage.setItem(readKey(c.id), `${c.epoch}:${c.cursor}`);
  renderSidebar();
  renderLatest();
}

// renderLatest shows, below the open conversation, how many messages
// arrived under the part the user is reading; choosing it goes there.
function renderLatest() {
  const c = active();
  const n = c && !$('messages').hidden ? c.unread : 0;
  const el = $('latest');
  el.hidden = n === 0;
  const text = `↓ ${n} new message${n === 1 ? '' : 's'} below`;
  if (n && el.textContent !== text) el.textContent = text;
}

// ---- the event stream ----

const stream = new Stream(watches, onEvent, onStreamState);

// watches lists every joined group with the cursor to resume from.
function watches() {
  const out = [];
  for (const g of state.groups.values()) {
    if (!g.member) continue;
    const c = conv(g.uuid);
    if (c.cursorKnown) out.push(`${g.uuid}:${c.epoch}:${c.cursor}`);
    else if (g.epoch) out.push(`${g.uuid}:${g.epoch}:${g.last_seq}`);
    else out.push(g.uuid);
  }
  return out;
}

function watchedSet() {
  return [...state.groups.values()].filter(g => g.member).map(g => g.uuid).sort().join(',');
}

// onStreamState shows the state of the page's link to huddle web. It
// said "connected", in green, whatever huddle web could reach, and a
// newcomer took it for "all well" while no registry answered (session
// 21's audit): it names what is connected, and renderReach says
// separately when huddle web reaches no registry.
function onStreamState(s, detail) {
  const el = $('conn');
  el.className = 'conn';
  state.live = s === 'live';
  renderReach();
  if (s === 'live') {
    // A narrow window's header has no room for the words after
    // "connected" (they wrapped it over three lines): the tooltip says it.
    const rest = document.createElement('span');
    rest.className = 'wide-only';
    rest.textContent = ' to huddle web';
    el.replaceChildren('connected', rest);
    el.title = 'This page\'s link to huddle web, which reaches the registries and groups for you';
    el.classList.add('live');
  } else if (s === 'reconnecting') {
    el.title = '';
    el.textContent = `reconnecting… (next try in ${detail} s)`;
    el.classList.add('down');
    // Is it the secret, or huddle web itself? A stream refused with 401,
    // or with no server behind it, looks like any error; the daemons'
    // troubles are told by each group's state.
    api.me().then(() => {}, err => {
      if (err.code === 'no_secret') fatal(err);
      else if (err.code === 'offline' && stream.es === null && el.classList.contains('down')) {
        el.textContent = `reconnecting… huddle web does not answer: is it still running? (next try in ${detail} s)`;
      }
    });
  }
}

function fatal(err) {
  state.fatal = true;
  stream.close();
  renderReach();
  const el = $('conn');
  el.className = 'conn fatal';
  el.textContent = fmt.describe(err);
  $('empty').querySelector('p').textContent = fmt.describe(err);
  renderWelcome(); // the error, in the welcome's place
}

function onEvent(name, d) {
  switch (name) {
    case 'hello':
      state.me = {fingerprint: d.fingerprint, short: d.short, name: d.name};
      $('me').textContent = `you: ${d.short}`;
      return;
    case 'groups':
      setGroups(d);
      return;
  }
  const c = conv(d.group);
  const g = state.groups.get(d.group);
  switch (name) {
    case 'message': {
      c.epoch = d.epoch; c.cursor = d.seq; c.cursorKnown = true;
      const item = messageItem(c, d);
      const ambiguous = c.names.add(d.name, d.from);
      const p = c.pending.get(d.id);
      if (p) { c.pending.delete(d.id); c.remove(p.key); }
      // While the first page is being fetched too: it may have been read
      // before this message was stored, and the stream has moved past it.
      if (c.loaded || c.loading) c.insert([item]);
      const mine = state.me && d.from === state.me.fingerprint;
      // Seen: the group open, the page shown, and the end of the
      // conversation in view. A user reading further up is not shown it:
      // it counts as unread, and the bar below the conversation says so.
      const seen = state.active === d.group && !document.hidden && list.atBottom(8);
      if (!mine && !seen) c.unread++;
      if (!mine && document.hidden && fmt.mentions(d.text, c.myName)) notify(g, d);
      if (state.active === d.group) {
        if (ambiguous) list.refresh();
        updateList(c);
        if (seen) markRead(c);
        renderLatest();
      }
      scheduleSidebar();
      break;
    }
    case 'gap':
      c.epoch = d.epoch; c.cursor = d.to; c.cursorKnown = true;
      if (c.loaded) c.insert([{k: 'gap', key: `g${d.epoch}:${d.from}`, ei: c.epochIndex(d.epoch), seq: d.from - 0.5, from: d.from, to: d.to}]);
      if (state.active === d.group) updateList(c);
      break;
    case 'reset':
      c.epoch = d.epoch; c.cursor = 0; c.cursorKnown = true;
      if (c.loaded) {
        c.insert([{k: 'reset', key: `r${d.epoch}`, ei: c.epochIndex(d.epoch), seq: 0}]);
        c.pageEpoch = d.epoch; c.lowest = 1; c.moreBefore = false;
      }
      if (state.active === d.group) updateList(c);
      break;
    case 'status':
      c.status = d.state;
      c.statusError = d.error || null;
      if (d.state === 'ended' && d.error && d.error.code === 'not_member' && g) {
        // Left from elsewhere (or removed): offer to join again.
        g.member = false;
        state.convs.delete(d.group);
        if (state.active === d.group) open(d.group, noLongerMember(g));
      } else if (state.active === d.group) renderHead();
      scheduleSidebar();
      break;
  }
}

// ---- groups ----

function setGroups(list) {
  const seen = new Set();
  const wasMember = state.active ? !!state.groups.get(state.active)?.member : false;
  let membersChanged = false;
  for (const g of list.groups) {
    const old = state.groups.get(g.uuid);
    // Someone joined or left the group open: its members panel and count
    // are asked again rather than at the next periodic refresh.
    if (old && old.members !== g.members && g.uuid === state.active) membersChanged = true;
    // Unlisted: a group the user joined that no registry lists now
    // (huddle web knows it from the joined file).
    g.listed = !g.unlisted;
    // A join or leave made here is known before the list says so.
    if (old && old.memberOverride !== undefined) {
      if (old.memberOverride === g.member || !g.reachable) delete old.memberOverride;
      else g.member = old.memberOverride, g.memberOverride = old.memberOverride;
    }
    // Only the group's daemon says who is a member: until it answers (a
    // group listed again after its daemon restarted), what the page knew
    // stands, so the group neither leaves the joined list nor its watch.
    if (old && old.member && !g.reachable) g.member = true;
    state.groups.set(g.uuid, g);
    seen.add(g.uuid);
    // Listed again: the open conversation of a group that was not (the
    // page was loaded while its daemon was gone) could not load; it does
    // now.
    if (old && old.listed === false && g.listed && g.member && g.uuid === state.active) {
      const c = conv(g.uuid);
      if (!c.loaded && !c.loading) {
        hideNotice();
        loadLast(c);
      }
    }
    if (g.member) {
      const c = conv(g.uuid);
      const said = c.sendAfter;
      c.sendAfter = g.reachable ? !!g.send_after : null;
      // Its daemon answers again: the message waiting to be retried is
      // tried now, not at the end of its backoff (up to 8 s), and one
      // held for the daemon's word (deliver) goes on or stops.
      if (said === null && c.sendAfter !== null) wakeOutbox(c);
      // Counted once, when the group's log is known: a group joined is
      // listed before its daemon answered (huddle web knows it from the
      // joined file), its epoch unknown; counted then, unless the stream
      // has delivered from it meanwhile (it counts what it delivers).
      if (!c.counted && g.epoch && !c.cursorKnown) {
        c.counted = true;
        const read = loadRead(g.uuid);
        if (!read || read.epoch !== g.epoch) firstVisit(c, g.epoch, g.last_seq);
        else if (g.last_seq > read.seq) {
          c.unread = g.last_seq - read.seq;
          countUnread(c, read.seq, g.epoch, g.last_seq);
        }
      }
    }
  }
  for (const [id, g] of [...state.groups]) {
    if (seen.has(id)) continue;
    // A joined group no registry lists now (its daemon stopping, a lease
    // lapsing, a registry restarting) is kept, offline, with its
    // conversation and its watch, until it is listed again: only groups
    // one has not joined come and go with the list.
    if (g.member) {
      g.listed = false, g.reachable = false;
      const c = state.convs.get(id);
      if (c) c.sendAfter = null; // as of any group unreachable
    } else state.groups.delete(id);
  }
  state.registries = list.registries;
  state.listed = true;
  renderSidebar();
  renderWelcome();
  renderReach();
  if (state.active) {
    // The group open shows the form to join it, or the conversation, by
    // what was known when it was opened; a group opened before its daemon
    // said who is a member (from a link, or chosen at once) changes over.
    const g = state.groups.get(state.active);
    if (g && !!g.member !== wasMember) open(state.active, g.member ? '' : noLongerMember(g));
    else {
      renderHead();
      if (g && g.member && membersChanged) refreshMembers(conv(g.uuid));
    }
  }
  const w = watchedSet();
  if (w !== state.watched) {
    state.watched = w;
    stream.reopen();
  }
  if (!state.active && location.hash.length > 1 && state.groups.has(location.hash.slice(1))) open(location.hash.slice(1));
}

// unreadCounted is how many messages past the read position countUnread
// reads to tell the user's own from others'; those past it stay counted.
const unreadCounted = 1000;

// countUnread makes a group's unread count, first estimated from the list
// (every message after the read position), count only others' messages:
// what the user sent meanwhile from elsewhere (huddle chat, another
// browser) is not news to them. It reads the messages from the read
// position up to last, the end of the estimate; those the stream
// delivers after it are counted as they come.
async function countUnread(c, from, epoch, last) {
  const read = c.readCount;
  let p;
  try {
    p = await api.after(c.id, from, Math.min(last - from, unreadCounted), epoch);
  } catch (err) {
    return; // the estimate stands
  }
  if (c.readCount !== read) return;
  const mine = p.messages.filter(m => m.seq <= last && state.me && m.from === state.me.fingerprint).length;
  c.unread = Math.max(0, c.unread - mine);
  scheduleSidebar();
}

// firstVisit counts a group's unread messages when this browser holds no
// read position in its log (a browser new to the key, or a log that began
// anew): what others wrote since the user's own last message, or since
// they joined if they have not written since, in the last unreadCounted
// messages. What the user wrote they were there for; what came before
// they joined is history, not news. The position found is stored, so the
// next visit counts from it as from any other.
async function firstVisit(c, epoch, last) {
  const read = c.readCount;
  let p, ms;
  try {
    [p, ms] = await Promise.all([
      last ? api.before(c.id, last + 1, Math.min(last, unreadCounted), epoch) : {messages: []},
      api.members(c.id),
    ]);
  } catch (err) {
    return; // nothing counted: the group has no news to show until some arrives
  }
  if (c.readCount !== read || !state.me) return;
  const me = ms.members.find(m => m.you);
  // Times compare as text: nine digits of fraction, UTC.
  const seen = m => m.from === state.me.fingerprint || (me && m.ts <= me.joined);
  let from = p.messages.length ? p.messages[0].seq - 1 : last;
  for (let i = p.messages.length - 1; i >= 0; i--) {
    if (seen(p.messages[i])) { from = p.messages[i].seq; break; }
  }
  c.unread += p.messages.filter(m => m.seq > from).length;
  localStorage.setItem(readKey(c.id), `${epoch}:${from}`);
  scheduleSidebar();
}

let sidebarTimer = 0;
function scheduleSidebar() {
  if (sidebarTimer) return;
  sidebarTimer = setTimeout(() => { sidebarTimer = 0; renderSidebar(); }, 100);
}

// The sidebar's rows, by group: updated in place, so that focus, hover and
// a click in progress survive the updates that arrive all the time.
const rows = new Map(); // uuid -> {li, sig}

function renderSidebar() {
  const filter = $('filter').value.trim().toLowerCase();
  const joined = [], others = [];
  const groups = [...state.groups.values()].sort((a, b) => a.name.localeCompare(b.name) || a.uuid.localeCompare(b.uuid));
  // Names that look alike count as one (fmt.lookalike: "lobby" beside
  // "lоbby" with a Cyrillic о, or "lobby " with a blank): anyone may
  // register a group under any name, and only the tag below tells the
  // owner's from a stranger's.
  // Every name a group is listed under counts (other_names: a rogue
  // registry renaming the real lobby and listing its own as lobby), as
  // the CLI takes each as naming the group.
  const looks = new Map(); // group -> the lookalikes of its names
  const nameCount = new Map();
  for (const g of groups) {
    const ls = new Set(fmt.allNames(g).map(fmt.lookalike));
    looks.set(g, ls);
    for (const l of ls) nameCount.set(l, (nameCount.get(l) || 0) + 1);
  }
  let total = 0;
  const keep = new Set();
  for (const g of groups) {
    const c = state.convs.get(g.uuid);
    const unread = g.member && c ? c.unread : 0;
    total += unread;
    if (filter && !fmt.allNames(g).some(n => n.toLowerCase().includes(filter)) && !g.uuid.startsWith(filter)) continue;
    const twin = [...looks.get(g)].some(l => nameCount.get(l) > 1);
    const also = (g.other_names || []).map(fmt.quoted).join(', ');
    const down = trouble(g, c)?.word || '';
    const sig = [g.name, also, twin, g.private, g.clash, down, unread, g.members, g.uuid === state.active].join('|');
    keep.add(g.uuid);
    let row = rows.get(g.uuid);
    if (!row || row.sig !== sig) {
      const li = row ? row.li : document.createElement('li');
      const b = row ? li.firstChild : document.createElement('button');
      if (!row) {
        b.type = 'button';
        b.dataset.group = g.uuid;
        b.addEventListener('click', () => { open(g.uuid); closeDrawers(); });
        li.append(b);
      }
      if (g.uuid === state.active) b.setAttribute('aria-current', 'true'); else b.removeAttribute('aria-current');
      const name = document.createElement('span');
      name.className = 'gname';
      name.dir = 'auto';
      name.textContent = fmt.shown(g.name);
      const parts = [name];
      // The names other registries list it under, where the user picks
      // it: one may be the name they know it by.
      if (also) {
        const a = document.createElement('span');
        a.className = 'also';
        a.dir = 'auto';
        a.textContent = `also listed as ${also}`;
        a.title = a.textContent;
        parts.push(a);
      }
      // Two groups of one name: tell them apart by UUID and daemon.
      if (twin) parts.push(tag(`${g.uuid.slice(0, 8)} · ${fmt.short(g.fingerprint)}`));
      if (g.private) parts.push(tag('private'));
      // Listed only under keys the user did not join it under: not used.
      if (g.clash) parts.push(tag(g.unlisted ? 'another key' : 'two daemons', 'down'));
      if (down) parts.push(tag(down, 'down'));
      li.className = unread > 0 ? 'unread' : '';
      if (unread > 0) {
        const badge = document.createElement('span');
        badge.className = 'badge';
        badge.textContent = unread > 999 ? '999+' : String(unread);
        parts.push(badge);
      }
      b.replaceChildren(...parts);
      b.setAttribute('aria-label', `${fmt.shown(g.name)}${also ? `, also listed as ${also}` : ''}${g.private ? ', private' : ''}${unread ? `, ${unread} unread` : ''}, ${g.members} members`);
      row = {li, sig};
      rows.set(g.uuid, row);
    }
    (g.member ? joined : others).push(row.li);
  }
  for (const id of [...rows.keys()]) if (!keep.has(id)) rows.delete(id);
  if (joined.length === 0) joined.push(note(state.groups.size ? 'none yet: pick one below to join' : 'no groups yet'));
  if (others.length === 0) others.push(note(filter ? 'no match' : 'none'));
  reconcile($('joined'), joined);
  reconcile($('others'), others);
  const regs = state.registries.map(r => `${r.addr}${r.ok ? leftOut(r) : registryTrouble(r)}`);
  const text = regs.length ? `Groups from ${regs.join(', ')}` : '';
  if ($('registries').textContent !== text) $('registries').textContent = text;
  // The tab tells which groups have news (or, with none, which group is
  // open), and its icon wears a dot while any has.
  const news = groups.filter(g => g.member && state.convs.get(g.uuid)?.unread > 0).map(g => fmt.shown(g.name));
  const current = state.active && state.groups.get(state.active);
  const title = total ? `(${total}) ${news.join(', ')} · huddle` : current ? `${fmt.shown(current.name)} · huddle` : 'huddle';
  if (document.title !== title) document.title = title;
  const icon = total ? 'icon-unread.svg' : 'icon.svg';
  if ($('icon').getAttribute('href') !== icon) $('icon').setAttribute('href', icon);
}

// renderWelcome says, on the page shown while no group is open, what to
// do when there is no group to pick: no registry answering (start one),
// or registries that list none (start a group daemon). Until session 21
// it said "Pick a group on the left" over an empty list, and a newcomer
// who had not run huddle up had only the sidebar's small print to go by.
// Commands are set apart as code, each kept on one line.
function renderWelcome() {
  let parts = [];
  if (state.listed && state.groups.size === 0 && !state.fatal) {
    const regs = state.registries.map(r => r.addr).join(', ');
    const restart = ['huddle web --registry HOST:PORT'];
    parts = state.registries.some(r => r.ok)
      ? [`No group is listed yet (registries: ${regs}). A group daemon hosts groups: `, ['huddle up'], ' hosts lobby, ', ['huddle serve --group NAME'], ' others.']
      : regs ? [`No registry answers (${regs}). Start one on this machine with `, ['huddle up'], ', or restart as ', restart, '.']
      : ['No registry was found, on this machine or over mDNS. Start one with ', ['huddle up'], ', or restart as ', restart, '.'];
  }
  const el = $('welcome-why');
  const text = parts.flat().join('');
  if (el.textContent !== text) {
    el.replaceChildren(...parts.map(p => {
      if (typeof p === 'string') return document.createTextNode(p);
      const c = document.createElement('code');
      c.textContent = p[0];
      return c;
    }));
  }
  el.hidden = !text;
  $('welcome-pick').hidden = !!text;
}

// renderReach says, beside the state of the page's link to huddle web,
// when huddle web reaches no registry: none found, or none of those it
// asks answers (each has failed; one that answered with another key, or
// too long a list, is said in the sidebar). Registries are how it finds
// groups: those it listed stay for 30 s, those joined stay, offline.
// Shown only while the link is live: else what it says is stale.
function renderReach() {
  const el = $('reach');
  const regs = state.registries;
  let text = '', title = '';
  if (state.live && state.listed && !state.fatal) {
    const start = 'start one on this machine (huddle up) or name one (huddle web --registry HOST:PORT)';
    if (regs.length === 0) {
      text = 'no registry found';
      title = `huddle web finds groups through registries, and has found none, on this machine or over mDNS: ${start}`;
    } else if (regs.every(r => !r.ok && r.error && !r.code)) {
      text = regs.length === 1 ? 'its registry does not answer' : 'no registry answers';
      title = `huddle web finds groups through registries, and none answers (${regs.map(r => r.addr).join(', ')}): ${start}`;
    }
  }
  if (el.textContent !== text) el.textContent = text;
  el.title = title;
  el.hidden = !text;
}

// leftOut says how many groups a registry that answered lists at an
// address that is not host:port (only one of before session 12 does: it
// took any address from anyone), which are not shown.
function leftOut(r) {
  if (!r.left_out) return '';
  return ` (${r.left_out} group${r.left_out === 1 ? '' : 's'} not shown: listed at an address that is not host:port)`;
}

// registryTrouble says why a registry's groups are not shown. Its text,
// like every other, goes into the page as text (textContent): no part of
// it is HTML. r.addr and r.forget (huddle forget-registry ADDR, shell
// quoted) are the user's own word: the address they gave huddle web, or
// the IP:port it found a registry at over mDNS (a ChangedError names the
// address the client dialed, never an instance name a peer chose).
function registryTrouble(r) {
  switch (r.code) {
    case 'too_large': return ' (its list is larger than huddle web keeps: not shown)';
    // It answered, with another key than the one pinned for it.
    case 'key_changed': return ` (its key is not the one pinned for it: someone may be impersonating it, or it was reinstalled; if so, run ${r.forget})`;
  }
  return ' (not answering)';
}

// reconcile makes el's children the nodes given, moving only if the order
// changed.
function reconcile(el, nodes) {
  const cur = [...el.children];
  if (cur.length === nodes.length && cur.every((n, i) => n === nodes[i] || (n.className === 'empty-note' && nodes[i].className === 'empty-note' && n.textContent === nodes[i].textContent))) return;
  el.replaceChildren(...nodes);
}

function tag(text, cls) {
  const s = document.createElement('span');
  s.className = 'tag' + (cls ? ' ' + cls : '');
  s.textContent = text;
  return s;
}

function note(text) {
  const li = document.createElement('li');
  li.className = 'empty-note';
  li.textContent = text;
  return li;
}

// ---- the open conversation ----

const list = new VList($('messages'), {
  key: it => it.key,
  sig: (it, i) => sig(active(), it, i),
  render: (it, i) => renderItem(active(), it, i),
  estimate: (it, width) => estimate(it, width),
  onScroll: () => {
    const c = active();
    maybeLoadOlder(c);
    if (c && c.unread && !document.hidden && list.atBottom(8)) markRead(c);
  },
});

// maybeLoadOlder loads the page before the oldest message when the top of
// the conversation is near: on scrolling, and after each load (a page that
// does not fill the window gives nothing to scroll).
function maybeLoadOlder(c) {
  if (c && state.active === c.id && c.moreBefore && !c.loading && $('messages').scrollTop < backlogFrom) loadOlder(c);
}

function active() { return state.active ? state.convs.get(state.active) : null; }

// open shows a group: its conversation, or the form to join it. why is
// set when the page changes the open group's view by itself (the user was
// no longer a member): it is said in a notice, and the focus stays where
// it is, so that what the user is typing goes nowhere rather than into
// the form (a name typed by mistake, and Enter joining under it).
function open(id, why) {
  const g = state.groups.get(id);
  if (!g) return;
  if (state.active !== id) {
    // Each group keeps its own draft: what was typed for one is never
    // sent to the next.
    if (state.active) state.drafts.set(state.active, $('input').value);
    $('input').value = state.drafts.get(id) || '';
    state.drafts.delete(id);
  }
  state.active = id;
  if (location.hash !== '#' + id) history.replaceState(null, '', '#' + id);
  hideNotice();
  $('empty').hidden = true;
  $('conv-head').hidden = false;
  renderHead();
  renderSidebar();
  if (!g.member) {
    showJoin(g, !why);
    if (why) showNotice({code: 'said', message: why});
    return;
  }
  $('join-form').hidden = true;
  $('messages').hidden = false;
  $('composer').hidden = false;
  grow(); // sized once shown: hidden, it has no height to measure
  $('input').placeholder = `Message ${fmt.shown(g.name)}`;
  const c = conv(id);
  list.reset();
  list.setItems(c.items);
  list.scrollToBottom();
  if (!c.loaded && g.listed === false) {
    // No registry lists it: huddle web would wait a poll (3 s) to be
    // sure, showing "Loading older messages…" meanwhile (session 21's
    // audit), then say the same. It is said at once, and the
    // conversation loads once the group is listed again (setGroups).
    showNotice(apiErr({code: 'not_found', message: 'no registry lists the group'}), () => loadLast(c));
  } else if (!c.loaded) loadLast(c);
  if (!document.hidden) markRead(c);
  refreshMembers(c);
  $('input').focus();
}

async function loadLast(c) {
  c.loading = true;
  if (state.active === c.id) list.refresh();
  try {
    const p = await api.before(c.id, 0, firstPage);
    c.loading = false;
    c.loaded = true;
    c.pageEpoch = p.epoch;
    c.epochIndex(p.epoch);
    const items = p.messages.map(m => messageItem(c, {...m, epoch: p.epoch}));
    for (const m of p.messages) c.names.add(m.name, m.from);
    c.lowest = p.messages.length ? p.messages[0].seq : p.last + 1;
    c.moreBefore = p.more;
    if (!c.cursorKnown || (c.epoch === p.epoch && c.cursor < p.last)) {
      // The stream follows from where this page ends.
      const was = c.cursorKnown;
      c.epoch = p.epoch; c.cursor = p.last; c.cursorKnown = true;
      if (!was) stream.reopen();
    }
    c.insert(items);
    if (state.active === c.id) {
      list.setItems(c.items);
      list.scrollToBottom();
      if (!document.hidden) markRead(c);
      maybeLoadOlder(c);
    }
  } catch (err) {
    c.loading = false;
    if (state.active === c.id) {
      list.refresh();
      showNotice(err, () => loadLast(c));
    }
  }
}

async function loadOlder(c) {
  c.loading = true;
  list.refresh();
  try {
    const p = await api.before(c.id, c.lowest, olderPage, c.pageEpoch);
    c.loading = false;
    for (const m of p.messages) c.names.add(m.name, m.from);
    c.insert(p.messages.map(m => messageItem(c, {...m, epoch: p.epoch})));
    if (p.messages.length) c.lowest = p.messages[0].seq;
    c.moreBefore = p.more && p.messages.length > 0;
    if (state.active === c.id) {
      list.setItems(c.items);
      maybeLoadOlder(c);
    }
  } catch (err) {
    c.loading = false;
    if (err.code === 'epoch_mismatch') c.moreBefore = false;
    else if (state.active === c.id) showNotice(err, () => loadOlder(c));
    if (state.active === c.id) list.refresh();
  }
}

function updateList(c) {
  if (list.atBottom(8) && !document.hidden && c.trim()) {
    // Trimmed while following the end: nothing in view moved.
  }
  list.setItems(c.items);
}

// sig is what a row's look depends on: it is re-rendered when it changes.
function sig(c, it, i) {
  switch (it.k) {
    case 'top':
      return `top|${c.held}|${c.loading}|${c.moreBefore}|${c.loaded}|${state.groups.get(c.id)?.listed}`;
    case 'msg': {
      const prev = c.items[i - 1];
      return `${it.key}|${newDay(prev, it)}|${continues(prev, it)}|${c.names.ambiguous(it.name)}|${c.myName}`;
    }
    case 'pending':
      return `${it.key}|${it.state}|${it.error ? it.error.code : ''}|${!!it.stopped}|${!!it.dropping}`;
  }
  return it.key;
}

function newDay(prev, it) {
  return !prev || !prev.ts || fmt.dayKey(prev.ts) !== fmt.dayKey(it.ts);
}

function continues(prev, it) {
  return !!prev && prev.k === 'msg' && prev.from === it.from && prev.name === it.name &&
    it.ts - prev.ts < 5 * 60000 && !newDay(prev, it);
}

function estimate(it, width) {
  if (it.k !== 'msg' && it.k !== 'pending') return 36;
  const perLine = Math.max(20, Math.floor((width - 60) / 8));
  let lines = 0;
  for (const part of it.text.split('\n')) lines += Math.max(1, Math.ceil(part.length / perLine));
  return 30 + lines * 21;
}

function renderItem(c, it, i) {
  const el = document.createElement('div');
  const g = state.groups.get(c.id);
  switch (it.k) {
    case 'top': {
      el.className = 'marker';
      // A group held back (listed only under another key) is never
      // asked for its history: say why, and the command that takes the
      // key, where it is read, not only in the state's tooltip. Until
      // session 15's walk this said "Loading older messages…" for ever.
      // Its first page is asked of the group's daemon, which may be slow
      // to answer, or not answer (down, unreachable): said so, not
      // "Loading older messages", of a conversation that has none yet.
      const name = g ? fmt.shown(g.name) : 'the group';
      el.textContent = c.held && g ? `R${heldText(g).slice(1)}` // no period: it ends with a command to copy
        : c.loading && !c.loaded ? `Reaching ${name}'s daemon for its messages…`
        : c.loading ? 'Loading older messages…'
        : c.moreBefore ? 'Scroll up for older messages'
        : c.loaded ? `This is the beginning of ${name}'s history on its daemon.`
        : g && g.listed === false ? `${name}'s messages load once a registry lists it again.` : '';
      return el;
    }
    case 'reset':
      el.className = 'marker reset';
      el.textContent = 'The group’s daemon restarted and its history was reset: messages above are no longer held by it.';
      return el;
    case 'gap':
      el.className = 'marker';
      el.textContent = `Messages #${it.from}–#${it.to} were dropped by the group’s retention before they could be shown.`;
      return el;
  }
  const prev = c.items[i - 1];
  if (it.k === 'msg' && newDay(prev, it)) {
    const day = document.createElement('div');
    day.className = 'day';
    day.setAttribute('role', 'separator');
    day.textContent = fmt.dayLabel(it.ts);
    el.append(day);
  }
  const m = document.createElement('div');
  m.className = 'msg';
  const mine = it.k === 'pending' || (state.me && it.from === state.me.fingerprint);
  if (mine) m.classList.add('own');
  if (it.k === 'msg') {
    m.dataset.seq = String(it.seq);
    m.dataset.epoch = String(it.epoch);
    m.dataset.from = it.from;
    if (!mine && fmt.mentions(it.text, c.myName)) m.classList.add('mention');
  }
  if (it.k === 'msg' && continues(prev, it)) {
    m.classList.add('cont');
    m.title = fmt.full(it.ts);
  } else {
    const meta = document.createElement('div');
    meta.className = 'meta';
    const name = document.createElement('span');
    name.className = 'name';
    name.dir = 'auto';
    name.textContent = fmt.shown(it.k === 'pending' ? (c.myName || 'you') : it.name);
    meta.append(name);
    if (it.k === 'msg' && c.names.ambiguous(it.name)) {
      const fp = document.createElement('span');
      fp.className = 'fp';
      fp.textContent = fmt.short(it.from);
      fp.title = it.from;
      meta.append(fp);
    }
    if (mine) {
      const you = document.createElement('span');
      you.className = 'you';
      you.textContent = 'you';
      meta.append(you);
    }
    if (it.k === 'msg') {
      const t = document.createElement('time');
      t.dateTime = new Date(it.ts).toISOString();
      t.title = fmt.full(it.ts);
      t.textContent = fmt.clock(it.ts);
      meta.append(t);
    }
    m.append(meta);
  }
  const text = document.createElement('div');
  text.className = 'text';
  // A message in a right-to-left script reads from the right, and
  // neither it nor a name in one reorders what stands beside it.
  text.dir = 'auto';
  text.textContent = it.text;
  m.append(text);
  if (it.k === 'pending') {
    m.classList.add('pending');
    m.append(pendingState(c, it));
  }
  el.append(m);
  return el;
}

function pendingState(c, p) {
  const s = document.createElement('div');
  s.className = 'state';
  const g = state.groups.get(c.id);
  switch (p.state) {
    case 'queued':
      // Not tried (again, for a Retry) yet: Discard drops it at once, and
      // the messages after it wait for the one above it alone. A Retry
      // of a message in doubt still says what its Discard drops.
      s.textContent = (p.inDoubt ? 'may have been sent (no answer settled it); ' : '') + 'waiting for the message above… ';
      s.append(linkButton('Discard', () => discard(c, p)));
      break;
    case 'sending':
      // Its first try (or a Retry's) under way: to a daemon listed but
      // dead it may take some 15 s to answer. Stop and Discard wait for
      // that answer, as under a retry's try (below): stopped, it is
      // then "not sent (retries stopped)", or "may have been sent" if
      // the try ended in doubt; discarded, it is dropped if the try was
      // refused, kept as "may have been sent" if it ended in doubt. A
      // Retry of a message in doubt says so, with Stop alone (Discard
      // only where it says it may have been sent).
      s.textContent = p.inDoubt ? 'may have been sent (no answer settled it): sending it again under its ID… ' : 'sending… ';
      if (p.dropping) s.append('Discarding it once the try under way answers…');
      else if (p.stopped) s.append('Stopping once the try under way answers…');
      else {
        s.append(linkButton('Stop', () => stopRetries(c, p)));
        if (!p.inDoubt) s.append(linkButton('Discard', () => dropUnderTry(c, p)));
      }
      break;
    case 'sent': s.textContent = 'sent'; break;
    case 'retrying':
    case 'held': {
      // A try under way when the user stopped or discarded the message is
      // waited for: it may store the message, or leave it in doubt.
      const after = 'once the try under way answers…';
      if (p.inDoubt) {
        // Retried under its ID until a try settles it: the user may stop
        // that (a daemon that checks the retries' position is retried
        // for as long as it takes), keeping Retry and Discard. Discard
        // only then, where it says the message may have been sent.
        s.textContent = `may have been sent (no answer settled it): ${fmt.describe(p.error, g)} ` + (p.state === 'held'
          ? `Retrying under its ID once ${g ? fmt.shown(g.name) : 'the group'}'s daemon answers… `
          : 'Retrying under its ID, stored once… ');
        if (p.stopped) s.append(`Stopping ${after}`);
        else s.append(linkButton('Stop', () => stopRetries(c, p)));
      } else if (p.dropping) {
        s.textContent = `not sent yet: ${fmt.describe(p.error, g)} Discarding it ${after}`;
      } else if (p.stopped) {
        s.textContent = `not sent yet: ${fmt.describe(p.error, g)} Stopping ${after}`;
      } else {
        // Never sent (every try refused, none in doubt): Discard drops it
        // at once, or once a try under way answers without doubt.
        s.textContent = `not sent yet: ${fmt.describe(p.error, g)} Retrying… `;
        s.append(linkButton('Stop', () => stopRetries(c, p)), linkButton('Discard', () => dropUnderTry(c, p)));
      }
      break;
    }
    case 'failed': {
      s.classList.add('bad');
      if (p.inDoubt && p.aged) {
        // Past what the window is sure to hold: a retry under its ID may
        // be stored as a new message. The user decides, told so; sent
        // again, its window counts from here.
        const since = p.error && p.error.code === 'window_passed'
          ? 'and the group\'s daemon says its dedup window no longer reaches back to it'
          : `and the group has stored ${dedupFloor.toLocaleString('en')} messages since, more than its dedup window is sure to hold`;
        failedWith(s, c, p, `may have been sent (no answer settled it), ${since}: sending it again may store it a second time. `,
          ['Send again', () => {
            p.aged = false;
            p.doubtEpoch = c.epoch;
            p.doubtFrom = c.cursor;
            resend(c, p);
          }]);
      } else if (p.inDoubt) {
        // A try of it may be stored: editing would send it again under a
        // new ID, stored twice if so. Retry keeps its ID (stored once,
        // while the group's dedup window still holds it); if it was
        // stored, it comes in from the group and replaces this line.
        failedWith(s, c, p, `may have been sent (no answer settled it; retries stopped): ${fmt.describe(p.error, g)} `,
          ['Retry', () => resend(c, p)]);
      } else {
        // Never sent: Edit takes it back to the message box (sent from
        // there under a new ID); one whose retries the user stopped may
        // be retried as it is.
        const edit = ['Edit', () => { discard(c, p); $('input').value = p.text; $('input').focus(); grow(); }];
        if (p.stopped) failedWith(s, c, p, `not sent (retries stopped): ${fmt.describe(p.error, g)} `, ['Retry', () => resend(c, p)], edit);
        else failedWith(s, c, p, `not sent: ${fmt.describe(p.error, g)} `, edit);
      }
      break;
    }
  }
  return s;
}

// failedWith fills the state line s of the failed message p: what
// happened (text), then a button for each [label, act] of actions, and
// Discard.
function failedWith(s, c, p, text, ...actions) {
  s.textContent = text;
  s.append(...actions.map(([label, act]) => linkButton(label, act)), linkButton('Discard', () => discard(c, p)));
}

function linkButton(label, act) {
  const b = document.createElement('button');
  b.className = 'link-button';
  b.textContent = label;
  b.addEventListener('click', act);
  return b;
}

// stopRetries ends the retries of p: at once between tries, else once the
// try under way answers (deliver).
function stopRetries(c, p) {
  p.stopped = true;
  if (p.wake) p.wake();
  else setPending(c, p, p.state, p.error);
}

// dropUnderTry discards p, a message never sent: at once between tries
// (none can store it), else once the try under way answers (deliver).
function dropUnderTry(c, p) {
  if (p.wake) discard(c, p);
  else {
    p.dropping = true;
    setPending(c, p, p.state, p.error);
  }
}

// resend queues the failed message p again under its ID, its tries in
// doubt counted afresh: behind the message the outbox is sending, if any
// ("waiting for the message above", not "sending", which has a try under
// way).
function resend(c, p) {
  p.doubtTries = 0;
  p.stopped = false;
  p.dropping = false;
  setPending(c, p, c.outbox.length ? 'queued' : 'sending', null);
  c.outbox.push(p);
  pump(c);
}

// discard drops the pending message p: one never sent, or one in doubt
// the user drops where the page says it may have been sent. A try under
// way is not cut short (the Discard of a message retrying waits for it).
function discard(c, p) {
  c.pending.delete(p.id);
  if (p.wake) p.wake();
  c.remove(p.key);
  if (state.active === c.id) list.setItems(c.items);
}

function renderHead() {
  const g = state.groups.get(state.active);
  const c = state.convs.get(state.active);
  if (!g) return;
  $('title').textContent = fmt.shown(g.name);
  $('title').title = `${g.uuid} · daemon ${g.fingerprint}` +
    (g.other_names && g.other_names.length ? ` · also listed as ${g.other_names.map(fmt.quoted).join(', ')}` : '') +
    (g.clash && g.unlisted ? ` · ${heldText(g)}`
      : g.clash ? ` · registries list this group with two different daemons: this page uses the one ${g.registries[0]} lists` : '');
  const st = $('group-state');
  st.className = 'group-state';
  st.title = '';
  $('leave').hidden = !g.member;
  $('members-toggle').hidden = !g.member;
  const held = !!(g.member && g.unlisted && g.clash);
  if (c && c.held !== held) {
    c.held = held; // the conversation's top says so (renderItem)
    list.refresh();
  }
  const t = trouble(g, c);
  if (t) {
    st.classList.add('down');
    st.textContent = t.text;
    if (t.title) st.title = t.title;
  } else {
    // The count is the list's, which is the daemon's word as soon as it
    // is newer than the registries'; who is online is the members
    // panel's, said only while the two agree on how many there are.
    const n = g.members;
    const online = g.member && c && c.members.length === n ? c.members.filter(m => m.online).length : 0;
    st.textContent = `${n} member${n === 1 ? '' : 's'}${online ? `, ${online} online` : ''}${g.private ? ' · private' : ''}`;
  }
  if (!g.member && !$('join-form').hidden) setJoinAbout(g);
}

// setJoinAbout shows joinAbout(g) in the join form, each part kept on one
// line (the line breaks between parts): the form's width broke "daemon
// 2wfg-ai3k" after "daemon", then at the key's hyphen. The list of other
// names, which may be long, wraps.
function setJoinAbout(g) {
  const el = $('join-about');
  const text = joinAbout(g);
  if (el.textContent === text) return;
  const nodes = [];
  for (const part of text.split(' · ')) {
    if (nodes.length) nodes.push(document.createTextNode(' · '));
    const s = document.createElement('span');
    if (!part.startsWith('also listed as')) s.className = 'nowrap';
    s.textContent = part;
    nodes.push(s);
  }
  el.replaceChildren(...nodes);
}

function joinAbout(g) {
  return `${g.members} member${g.members === 1 ? '' : 's'} · ${g.last_seq} message${g.last_seq === 1 ? '' : 's'} so far · ` +
    `${g.private ? 'private: joining needs its secret' : 'public'} · daemon ${fmt.short(g.fingerprint)}` +
    (g.other_names && g.other_names.length ? ` · also listed as ${g.other_names.map(fmt.quoted).join(', ')}` : '');
}

// trouble says what keeps a group from being live, or null: word for its
// row in the list, text for the head of its conversation (title: more,
// on hover). Both come from here so that the list and the head never say
// two things of one group: a joined group whose daemon stopped and
// deregistered it was "offline" in the list and "reconnecting... its
// daemon is restarting or busy" in the head (the watch's last error, the
// daemon's goodbye). Truest first: a group no registry lists is offline,
// whatever its watch last heard, until its watch is live again (a lease
// lapsed under a daemon still serving). A watch ended for good (refused:
// the head says why) is "error" in the list.
function trouble(g, c) {
  const live = c && c.status === 'live';
  if (g.member && g.unlisted && g.clash) {
    return {word: 'offline', title: heldText(g),
      text: `offline: listed only under another key (${(g.other_keys || []).map(fmt.short).join(', ')})`};
  }
  if (g.member && !g.listed && !live) return {word: 'offline', ...fmt.offline(g)};
  if (g.member && c && c.status === 'reconnecting') return {word: 'reconnecting', text: fmt.reconnecting(c.statusError, g)};
  if (g.member && c && c.status === 'ended' && c.statusError) return {word: 'error', text: fmt.describe(apiErr(c.statusError), g)};
  // Not yet asked (asking: huddle web just started) is not unreachable.
  if (!g.reachable && !live && !g.asking) return {word: 'unreachable', text: fmt.describe(apiErr({code: 'unreachable'}), g)};
  return null;
}

// heldText says why a group the user joined, listed only under other
// daemon keys (an impostor's while its daemon is down, or its daemon
// moved to a new key), is not used, and how to use one of them.
function heldText(g) {
  const keys = g.other_keys || [];
  return `registries list it only under daemon ${keys.map(fmt.short).join(' and ')}, not ${fmt.short(g.fingerprint)} where you joined it: ` +
    `not used (anyone can list any group). If its owner moved it there: huddle join ${g.uuid} --daemon ${keys.length === 1 ? keys[0] : 'FINGERPRINT'}`;
}

function apiErr(e) { return new APIError(0, e); }

function noLongerMember(g) {
  return `You are no longer a member of ${fmt.shown(g.name)}: you left it elsewhere (another page, or huddle leave), or were removed. Join again to read and send.`;
}

// ---- notices ----

function showNotice(err, retry) {
  const n = $('notice');
  const g = state.groups.get(state.active);
  n.replaceChildren(document.createTextNode(fmt.describe(err, g)));
  if (retry) {
    const b = document.createElement('button');
    b.className = 'link-button';
    b.textContent = 'Try again';
    b.addEventListener('click', () => { hideNotice(); retry(); });
    n.append(b);
  }
  n.hidden = false;
  if (err.code === 'no_secret') fatal(err);
}

function hideNotice() { $('notice').hidden = true; }

// ---- joining and leaving ----

function showJoin(g, focus) {
  $('messages').hidden = true;
  $('composer').hidden = true;
  $('members').hidden = true;
  const f = $('join-form');
  f.hidden = false;
  $('join-title').textContent = `Join ${fmt.shown(g.name)}`;
  setJoinAbout(g);
  $('join-secret-label').hidden = !g.private;
  $('join-secret').required = g.private;
  $('join-secret').value = '';
  // The form is every group's: its button is disabled while this group's
  // join is under way, not another's. It was left disabled by the join of
  // the group open before, when the user went on to another group's form
  // before that join was answered (the list may say the user is a member
  // first, and open the conversation): Join did nothing until then (e2e
  // TestWebJoinStaysWhereTheUserWent, load ~20-60).
  $('join-form').querySelector('button').disabled = state.joining.has(g.uuid);
  const name = $('join-name');
  // The name last joined under from this browser, else the one huddle
  // join would take (huddle web's $USER).
  if (!name.value) name.value = localStorage.getItem('huddle.name') || (state.me && state.me.name) || '';
  // Selected: Enter takes the name offered, typing replaces it.
  if (focus) { name.focus(); name.select(); }
  renderLatest();
}

$('join-form').addEventListener('submit', async ev => {
  ev.preventDefault();
  const id = state.active;
  const g = state.groups.get(id);
  const name = $('join-name').value.trim();
  if (!g) return;
  if (!name) {
    // Spaces pass the field's "required": say what is missing rather
    // than do nothing.
    showNotice({code: 'said', message: `Give a name to join ${fmt.shown(g.name)} under: the members see it beside your messages.`});
    $('join-name').focus();
    return;
  }
  if (state.joining.has(id)) return; // this group's join is under way
  const button = $('join-form').querySelector('button');
  state.joining.add(id);
  button.disabled = true;
  try {
    const r = await api.join(id, name, g.private ? $('join-secret').value : '');
    localStorage.setItem('huddle.name', name);
    g.member = true;
    g.memberOverride = true;
    const c = conv(id);
    c.myName = name;
    state.watched = watchedSet();
    stream.reopen();
    // The user may have opened another group while the join was under
    // way: they stay there, and the sidebar shows the group joined.
    if (state.active === id) open(id);
    else renderSidebar();
    // Joined, but not recorded in the joined file (its lock held by
    // another process past huddle web's wait): said here, not only in
    // huddle web's log.
    if (r.unrecorded) showNotice({code: 'said', message: `${fmt.shown(g.name)}: ${r.unrecorded}`});
  } catch (err) {
    // Said where the user is, which may be another group by now.
    showNotice(err);
  } finally {
    state.joining.delete(id);
    button.disabled = state.joining.has(state.active); // the open group's join, if any, still under way
  }
});

$('leave').addEventListener('click', async () => {
  const id = state.active;
  const g = state.groups.get(id);
  if (!g || !confirm(`Leave ${fmt.shown(g.name)}? You can join again later.`)) return;
  try {
    const r = await api.leave(id);
    g.member = false;
    g.memberOverride = false;
    state.convs.delete(id);
    state.watched = watchedSet();
    stream.reopen();
    if (state.active === id) open(id); // as after a join
    else renderSidebar();
    if (r.unrecorded) showNotice({code: 'said', message: `${fmt.shown(g.name)}: ${r.unrecorded}`});
  } catch (err) {
    showNotice(err);
  }
});

// ---- sending ----

$('composer').addEventListener('submit', ev => {
  ev.preventDefault();
  sendInput();
});

$('input').addEventListener('keydown', ev => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    sendInput();
  }
});
$('input').addEventListener('input', grow);

function grow() {
  const t = $('input');
  t.style.height = 'auto';
  t.style.height = Math.min(t.scrollHeight + 2, window.innerHeight * 0.4) + 'px';
}

function sendInput() {
  const c = active();
  const t = $('input');
  const text = t.value;
  if (!c || text.trim() === '') return;
  t.value = '';
  grow();
  const id = newID();
  const p = {k: 'pending', key: `p${id}`, ei: Infinity, seq: ++c.seqCounter, id, text, state: c.outbox.length ? 'queued' : 'sending', error: null, tries: 0};
  c.pending.set(id, p);
  c.insert([p]);
  list.setItems(c.items);
  list.scrollToBottom();
  c.outbox.push(p);
  pump(c);
}

// pump sends the conversation's pending messages one at a time, in the
// order they were typed: each waits until the one before it is stored or
// has failed for good, so a rate limit or an outage that holds one back
// never lets a later one overtake it.
async function pump(c) {
  if (c.sending) return;
  c.sending = true;
  while (c.outbox.length) {
    const p = c.outbox[0];
    if (c.pending.has(p.id)) await deliver(c, p);
    c.outbox.shift();
  }
  c.sending = false;
}

// deliver sends a pending message, retrying with the same ID (so that it
// is stored once) while the failure may pass; it returns once the message
// is stored, has failed for good, or was discarded.
async function deliver(c, p) {
  if (p.state === 'queued') setPending(c, p, 'sending', null);
  for (;;) {
    if (p.inDoubt && pastWindow(c, p)) {
      // Seen past the window: a retry may store it a second time.
      p.aged = true;
      setPending(c, p, 'failed', p.error);
      return;
    }
    if (p.inDoubt && p.doubtTries >= doubtTries && c.sendAfter !== true) {
      // Past its bound, a retry goes only to a daemon known to check it
      // (below): the group's daemon has not answered since the last try
      // (c.sendAfter null), so the retry waits for its word, given when
      // it answers again (setGroups wakes it), and stops if it does not
      // check retries (an older daemon in its place).
      if (c.sendAfter === false) {
        setPending(c, p, 'failed', p.error);
        return;
      }
      setPending(c, p, 'held', p.error);
      await rest(p, 8 * window.huddle.retryUnit);
      if (!c.pending.has(p.id)) return;
      if (p.stopped) {
        setPending(c, p, 'failed', p.error);
        return;
      }
      continue;
    }
    p.tries++;
    if (!p.inDoubt && c.cursorKnown) {
      // Where the group's log was, as this page last saw it, before this
      // try: if it stores the message, it stores it past this.
      p.tryEpoch = c.epoch;
      p.tryFrom = c.cursor;
    }
    try {
      // A retry in doubt says where the log stood before the first try:
      // a daemon whose dedup window no longer reaches back there refuses
      // it (window_passed) rather than store it a second time.
      await api.send(c.id, p.text, p.id, p.inDoubt && p.doubtFrom !== undefined ? {epoch: p.doubtEpoch, seq: p.doubtFrom} : null);
      if (c.pending.has(p.id)) setPending(c, p, 'sent', null);
      return;
    } catch (err) {
      if (!c.pending.has(p.id)) return;
      // not_found: no registry lists the group right now; the page keeps
      // it, offline, until one does again.
      // In doubt (the daemon may have stored it), whatever its code: only
      // its retry, under the same ID, settles it, and "not sent" may be
      // false (until session 19). The page remembers it: a later refusal
      // speaks of that try alone (and huddle web's handle that knew the ID
      // in doubt may have been replaced, the group having moved), so the
      // message stays "may have been sent" until a try is acknowledged.
      if (err.inDoubt && !p.inDoubt && p.tryFrom !== undefined) {
        // Where the group's log was before the try that may have stored
        // it: stored, it is past this.
        p.doubtEpoch = p.tryEpoch;
        p.doubtFrom = p.tryFrom;
      }
      if (err.inDoubt) p.inDoubt = true;
      if (p.dropping) {
        // Discarded while this try was under way: dropped if it left the
        // message never sent; in doubt, it stays, saying it may have
        // been sent, its retries stopped (Retry, Discard).
        p.dropping = false;
        if (!p.inDoubt) {
          discard(c, p);
          return;
        }
        p.stopped = true;
      }
      if (err.code === 'window_passed') {
        // The daemon's dedup window no longer reaches back to the first
        // try: sent again under its ID it may be stored a second time.
        p.aged = true;
        setPending(c, p, 'failed', err);
        return;
      }
      const transient = err.inDoubt || ['offline', 'unreachable', 'wrong_key', 'unavailable', 'internal', 'rate_limited', 'not_found'].includes(err.code);
      // Retries of a message in doubt are bounded against a daemon that
      // does not check their position (older than session 21): its ID
      // dedups only within the group's window (its last 65,536 messages
      // at least, or what its log retains after a restart), and a retry
      // past it would store it twice. Past doubtTries (some 40 s of
      // backoff), the page stops and lets the user retry it (same ID) or
      // discard it. The bound is a time, not the window (README: a group
      // storing more than ~1,600 messages a second passes 65,536 within
      // it): such a daemon says nothing of an ID that left the window (a
      // retry within it gets the first try's ack, as a duplicate; past it
      // the daemon has forgotten it). What the page can see, it heeds: it
      // stops at once once its watch has shown the group storing
      // dedupFloor messages since the try (pastWindow). A daemon that
      // checks the position (c.sendAfter) refuses a retry past its window
      // (window_passed, above), so every retry that names one is safe: the
      // page goes on, every 8 s, until a try settles it or the user stops
      // it (it stopped after 40 s until session 22, often while the
      // daemon was still restarting). A retry that names none (the page
      // did not know where the log stood before the first try: its
      // conversation not loaded yet) is checked by nothing: bounded.
      // Whether the daemon checks is not known while the group is
      // unreachable (c.sendAfter null): past the bound, the next retry
      // waits for its word (above), as it may come from another daemon.
      if (p.inDoubt) p.doubtTries = (p.doubtTries || 0) + 1;
      const mayCheck = c.sendAfter !== false && p.doubtFrom !== undefined;
      if (!transient || p.stopped || (p.inDoubt && p.doubtTries >= doubtTries && !mayCheck)) {
        if (!transient) p.stopped = false; // refused for good, not stopped
        setPending(c, p, 'failed', err);
        return;
      }
      setPending(c, p, 'retrying', err);
      const wait = err.code === 'rate_limited' ? Math.max(err.retryAfterMS, 100) : window.huddle.retryUnit * 2 ** Math.min(p.tries - 1, 3);
      // Discarding it wakes the wait, so the messages after it go on.
      await rest(p, wait);
      if (!c.pending.has(p.id)) return;
      if (p.stopped) {
        setPending(c, p, 'failed', p.error);
        return;
      }
    }
  }
}

// rest waits ms, or until p.wake is called: by Stop, Discard, or the
// group's daemon answering again (wakeOutbox).
async function rest(p, ms) {
  await new Promise(wake => { p.wake = wake; setTimeout(wake, ms); });
  p.wake = null;
}

// wakeOutbox ends the wait of the message c's outbox is sending, if it
// waits between tries: it is tried again now.
function wakeOutbox(c) {
  const p = c.outbox[0];
  if (p && p.wake) p.wake();
}

// pastWindow reports whether the page has seen the group's log move far
// enough since p's try in doubt that the ID may have left the group's
// dedup window: dedupFloor messages stored after the last one the page
// had seen then (a message stored by that try is past it). What it has
// not seen yet it cannot heed: the bound is also a time (doubtTries). A
// new log (epoch: the daemon lost its history) holds no copy to repeat.
function pastWindow(c, p) {
  if (p.doubtFrom === undefined || !c.cursorKnown || c.epoch !== p.doubtEpoch) return false;
  return c.cursor - p.doubtFrom >= dedupFloor;
}

function setPending(c, p, s, err) {
  p.state = s;
  p.error = err;
  if (state.active === c.id) list.refresh();
}

// ---- members ----

let membersTimer = 0;

async function refreshMembers(c) {
  clearTimeout(membersTimer);
  try {
    const r = await api.members(c.id);
    c.members = r.members;
    let ambiguous = false;
    for (const m of r.members) {
      if (c.names.add(m.name, m.fingerprint)) ambiguous = true;
      if (m.you) c.myName = m.name;
    }
    if (state.active === c.id) {
      renderMembers(c);
      renderHead();
      if (ambiguous) list.refresh();
    }
  } catch (err) {
    if (err.code === 'not_member') {
      const g = state.groups.get(c.id);
      if (g) g.member = false;
      if (g && state.active === c.id) open(c.id, noLongerMember(g));
      return;
    }
  }
  if (state.active === c.id) membersTimer = setTimeout(() => { if (!document.hidden) refreshMembers(c); }, membersEvery);
}

function renderMembers(c) {
  const ms = [...c.members].sort((a, b) => (b.online - a.online) || a.name.localeCompare(b.name));
  const now = Date.now();
  $('member-list').replaceChildren(...ms.map(m => {
    const li = document.createElement('li');
    if (m.online) li.className = 'online';
    const dot = document.createElement('span');
    dot.className = 'dot';
    dot.setAttribute('aria-hidden', 'true');
    const name = document.createElement('span');
    name.className = 'mname';
    name.dir = 'auto';
    name.textContent = fmt.shown(m.name) + (m.you ? ' (you)' : '');
    const detail = document.createElement('span');
    detail.className = 'detail';
    const seen = m.online ? 'online' : m.last_seen ? `seen ${fmt.ago(Date.parse(m.last_seen), now)}` : 'not seen lately';
    detail.textContent = `${m.short} · ${seen}`;
    detail.title = m.fingerprint;
    li.setAttribute('aria-label', `${fmt.shown(m.name)}${m.you ? ' (you)' : ''}, ${seen}, key ${m.short}`);
    li.append(dot, name, detail);
    return li;
  }));
  $('members-heading').textContent = `Members (${ms.filter(m => m.online).length} online of ${ms.length})`;
}

$('latest').addEventListener('click', () => {
  const c = active();
  list.scrollToBottom();
  if (c) markRead(c);
  $('input').focus();
});

$('members-toggle').addEventListener('click', () => {
  const m = $('members');
  m.hidden = !m.hidden;
  $('members-toggle').setAttribute('aria-expanded', String(!m.hidden));
  if (!m.hidden) closeDrawers(); // one drawer at a time (wide, the group list is no drawer)
  const c = active();
  if (!m.hidden && c) { renderMembers(c); refreshMembers(c); }
});

// narrow matches the width under which the group list and the members are
// drawers (style.css).
const narrow = matchMedia('(max-width: 760px)');

// The members panel's own close button: on a narrow screen it is a drawer
// over the button that opened it, and a phone has no Esc.
$('members-close').addEventListener('click', closeMembers);

function closeMembers() {
  $('members').hidden = true;
  $('members-toggle').setAttribute('aria-expanded', 'false');
}

// ---- notifications ----

function notify(g, d) {
  if (!('Notification' in window) || Notification.permission !== 'granted') return;
  const {title, body} = fmt.notification(g, d);
  const n = new Notification(title, {body, tag: `${d.group}:${d.seq}`});
  n.onclick = () => { window.focus(); open(d.group); n.close(); };
}

if ('Notification' in window && Notification.permission === 'default') {
  $('notify').hidden = false;
  $('notify').addEventListener('click', async () => {
    await Notification.requestPermission();
    $('notify').hidden = Notification.permission !== 'default';
  });
}

// ---- keyboard and narrow windows ----

function closeDrawers() {
  $('sidebar').classList.remove('open');
  $('sidebar-toggle').setAttribute('aria-expanded', 'false');
}

$('sidebar-toggle').addEventListener('click', () => {
  const open = $('sidebar').classList.toggle('open');
  $('sidebar-toggle').setAttribute('aria-expanded', String(open));
  if (open) closeMembers(); // one drawer at a time (the button shows on a narrow screen only)
  if (open) $('filter').focus();
});

$('filter').addEventListener('input', renderSidebar);
$('filter').addEventListener('keydown', ev => {
  const first = document.querySelector('.group-list button');
  if ((ev.key === 'Enter' || ev.key === 'ArrowDown') && first) {
    ev.preventDefault();
    if (ev.key === 'ArrowDown') { first.focus(); return; }
    // Open the first match, and show every group again.
    $('filter').value = '';
    first.click();
    renderSidebar();
  }
});

$('sidebar').addEventListener('keydown', ev => {
  if (ev.key !== 'ArrowDown' && ev.key !== 'ArrowUp') return;
  const buttons = [...document.querySelectorAll('.group-list button')];
  const i = buttons.indexOf(document.activeElement);
  if (i < 0) return;
  ev.preventDefault();
  const next = buttons[i + (ev.key === 'ArrowDown' ? 1 : -1)];
  if (next) next.focus(); else if (ev.key === 'ArrowUp') $('filter').focus();
});

document.addEventListener('keydown', ev => {
  if ((ev.ctrlKey || ev.metaKey) && ev.key.toLowerCase() === 'k') {
    ev.preventDefault();
    $('sidebar').classList.add('open');
    $('sidebar-toggle').setAttribute('aria-expanded', 'true');
    if (narrow.matches) closeMembers(); // one drawer at a time
    $('filter').focus();
    $('filter').select();
  } else if (ev.altKey && (ev.key === 'ArrowUp' || ev.key === 'ArrowDown')) {
    ev.preventDefault();
    const ids = [...document.querySelectorAll('.group-list button')].map(b => b.dataset.group);
    const i = ids.indexOf(state.active);
    const next = ids[(i + (ev.key === 'ArrowDown' ? 1 : ids.length - 1)) % ids.length];
    if (next) open(next);
  } else if (ev.key === 'Escape') {
    closeMembers();
    closeDrawers();
  }
});

document.addEventListener('visibilitychange', () => {
  const c = active();
  if (!document.hidden && c) {
    if (list.atBottom(8)) markRead(c);
    updateList(c);
    refreshMembers(c);
  }
});

window.addEventListener('hashchange', () => {
  const id = location.hash.slice(1);
  if (id && id !== state.active && state.groups.has(id)) open(id);
});

// The drawers of narrow windows open under the top bar, whatever its height.
new ResizeObserver(() => {
  document.documentElement.style.setProperty('--top', document.querySelector('.top').offsetHeight + 'px');
}).observe(document.querySelector('.top'));

// ---- start ----

async function start() {
  try {
    state.me = await api.me();
    $('me').textContent = `you: ${state.me.short}`;
    setGroups(await api.groups());
  } catch (err) {
    if (err.code === 'no_secret') { fatal(err); return; }
    onStreamState('reconnecting', 1);
  }
  if (!state.fatal && !stream.es) stream.open();
}

start();
