// The page's side of huddle web's API: JSON calls, and the event stream,
// which it reopens itself (with each group's cursor) when it breaks.

// APIError is an error the server reported ({error: {code, message, ...}}),
// or a network failure (code "offline").
export class APIError extends Error {
  constructor(status, body) {
    super(body.message || body.code);
    this.status = status;
    this.code = body.code;
    this.retryAfterMS = body.retry_after_ms || 0;
    this.epoch = body.epoch || '';
    // A send whose outcome is unknown (it may be stored): retried with
    // its id, it is stored once.
    this.inDoubt = !!body.in_doubt;
    // No answer of huddle web's was read (the connection failed, or its
    // reply was cut): the request may have done its work before that.
    this.unanswered = !!body.unanswered;
  }
}

export async function call(method, path, body) {
  const init = {method, headers: {}, credentials: 'same-origin'};
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new APIError(0, {code: 'offline', message: 'huddle web cannot be reached: is it still running?', unanswered: true});
  }
  let data;
  try {
    data = await res.json();
  } catch (e) {
    throw new APIError(res.status, {code: 'internal', message: `unreadable reply (HTTP ${res.status})`, unanswered: true});
  }
  if (!res.ok) throw new APIError(res.status, data.error || {code: 'internal', message: `HTTP ${res.status}`});
  return data;
}

export const api = {
  me: () => call('GET', '/api/me'),
  groups: () => call('GET', '/api/groups'),
  group: id => call('GET', `/api/groups/${id}`),
  join: (id, name, secret) => call('POST', `/api/groups/${id}/join`, {name, secret}),
  leave: id => call('POST', `/api/groups/${id}/leave`),
  members: id => call('GET', `/api/groups/${id}/members`),
  before: (id, before, limit, epoch) => {
    const q = new URLSearchParams({limit: String(limit)});
    if (before) q.set('before', String(before));
    if (epoch) q.set('epoch', String(epoch));
    return call('GET', `/api/groups/${id}/messages?${q}`);
  },
  after: (id, after, limit, epoch) => {
    const q = new URLSearchParams({after: String(after), limit: String(limit)});
    if (epoch) q.set('epoch', String(epoch));
    return call('GET', `/api/groups/${id}/messages?${q}`);
  },
  // after ({epoch, seq}), for a retry of a message in doubt: where the page
  // saw the log stand before its first try (PROTOCOL.md §8.5).
  //
  // A send huddle web gave no answer to that the page could read may have
  // reached the group's daemon before its connection failed or its reply
  // was cut (huddle web stopped or restarted under it), and been stored:
  // it is in doubt, as a send huddle web saw cut short is (in_doubt), and
  // is retried under its ID. Until session 23's review the page took it
  // for not sent: its Discard dropped it at once and Stop then Edit sent
  // it again under a new ID, stored twice if the first try was stored.
  send: async (id, text, msgID, after) => {
    try {
      return await call('POST', `/api/groups/${id}/messages`,
        after ? {text, id: msgID, after_epoch: after.epoch, after_seq: after.seq} : {text, id: msgID});
    } catch (err) {
      if (err instanceof APIError && err.unanswered) err.inDoubt = true;
      throw err;
    }
  },
};

// newID returns a UUIDv7 (time-ordered, random), the message ID a send is
// retried with.
export function newID() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  let ms = Date.now();
  for (let i = 5; i >= 0; i--) { b[i] = ms % 256; ms = Math.floor(ms / 256); }
  b[6] = 0x70 | (b[6] & 0x0f);
  b[8] = 0x80 | (b[8] & 0x3f);
  const h = [...b].map(x => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// Stream keeps one event stream open: watches(): the watch parameters
// (UUID or UUID:EPOCH:SEQ) to open it with, asked anew at each (re)open;
// on(name, data) for each event; state(s, detail) with s "live",
// "reconnecting" (detail: seconds until the next try) or "fatal".
export class Stream {
  constructor(watches, on, state) {
    this.watches = watches;
    this.on = on;
    this.state = state;
    this.es = null;
    this.backoff = 500;
    this.timer = 0;
    this.lastData = 0;
    this.stale = setInterval(() => this.checkStale(), 5000);
  }

  open() {
    this.close();
    const q = new URLSearchParams();
    for (const w of this.watches()) q.append('watch', w);
    const es = new EventSource('/api/events?' + q);
    this.es = es;
    this.lastData = Date.now();
    const handle = name => ev => {
      this.lastData = Date.now();
      let data;
      try { data = JSON.parse(ev.data); } catch (e) { return; }
      this.on(name, data);
    };
    for (const name of ['hello', 'groups', 'message', 'gap', 'reset', 'status']) es.addEventListener(name, handle(name));
    es.addEventListener('hello', () => { this.backoff = 500; this.state('live'); });
    es.onmessage = () => { this.lastData = Date.now(); };
    es.onerror = () => {
      if (this.es !== es) return;
      // EventSource would reconnect with the cursors it opened with; the
      // page's have moved on, so it reconnects itself.
      this.retry();
    };
  }

  retry() {
    this.close();
    const wait = this.backoff;
    this.backoff = Math.min(this.backoff * 2, 8000);
    this.state('reconnecting', Math.ceil(wait / 1000));
    this.timer = setTimeout(() => this.open(), wait);
  }

  // reopen reopens the stream now, with the watches as they are now (a
  // group was joined or left).
  reopen() {
    clearTimeout(this.timer);
    this.open();
  }

  // checkStale reconnects a stream silent for three pings (the server
  // pings every 15 s): a connection that died without a word.
  checkStale() {
    if (this.es && Date.now() - this.lastData > 45000) this.retry();
  }

  close() {
    clearTimeout(this.timer);
    if (this.es) {
      this.es.close();
      this.es = null;
    }
  }
}
