'use strict';
// The classic design in Node: `ws` + `ioredis`, one Redis channel per room, the
// room's channel subscribed on its first local join and unsubscribed after its
// last leave, one PUBLISH per message (after an INCR that numbers the room's
// messages). It speaks the subset of shared/PROTOCOL.md that `wsfleet bench` uses:
// welcome, join/joined, leave/left, message (with `ts` and `offset`), ack, ping/pong.

const crypto = require('crypto');
const { WebSocketServer } = require('ws');
const Redis = require('ioredis');
const { settings, healthServer, exitOnSignals, exitWithParent } = require('./common');

const config = settings('ws-peer');
const pub = new Redis(config.redisUrl);
const sub = new Redis(config.redisUrl);
const rooms = new Map(); // room -> { members: Set<WebSocket>, subscribed: Promise }
const CHANNEL = 'peer:room:';

sub.on('messageBuffer', (channel, payload) => {
  const room = rooms.get(channel.toString().slice(CHANNEL.length));
  if (room === undefined) return;
  for (const member of room.members) {
    if (member.readyState === 1) member.send(payload, { binary: false });
  }
});

function send(socket, frame) {
  if (socket.readyState === 1) socket.send(JSON.stringify(frame));
}

async function join(socket, name) {
  let room = rooms.get(name);
  if (room === undefined) {
    room = { members: new Set(), subscribed: sub.subscribe(CHANNEL + name) };
    rooms.set(name, room);
  }
  await room.subscribed;
  room.members.add(socket);
  socket.rooms.add(name);
  send(socket, { type: 'joined', room: name, offset: null, epoch: null, recovered: false, replayed: 0 });
}

function leave(socket, name) {
  socket.rooms.delete(name);
  const room = rooms.get(name);
  if (room === undefined) return;
  room.members.delete(socket);
  if (room.members.size === 0) {
    rooms.delete(name);
    sub.unsubscribe(CHANNEL + name).catch(() => {});
  }
}

async function publish(socket, frame) {
  const offset = String(await pub.incr(`peer:{${frame.room}}:seq`));
  const message = {
    type: 'message',
    room: frame.room,
    offset,
    from: socket.id,
    content: frame.content,
    ts: Date.now(),
  };
  await pub.publish(CHANNEL + frame.room, JSON.stringify(message));
  send(socket, { type: 'ack', id: frame.id ?? null, room: frame.room, offset });
}

const server = healthServer();
const wss = new WebSocketServer({ server, path: '/ws', maxPayload: 64 * 1024, perMessageDeflate: false });

wss.on('connection', (socket) => {
  socket.id = crypto.randomBytes(9).toString('base64url');
  socket.rooms = new Set();
  socket.alive = true;
  socket.on('pong', () => {
    socket.alive = true;
  });
  send(socket, { type: 'welcome', conn: socket.id, server: config.instance, heartbeat: config.heartbeat });
  socket.on('message', (data, isBinary) => {
    let frame;
    try {
      frame = isBinary ? null : JSON.parse(data);
    } catch {
      frame = null;
    }
    if (frame === null || typeof frame !== 'object') {
      send(socket, { type: 'error', code: 'bad_json', message: 'not a JSON object' });
      return;
    }
    const done = (promise) =>
      promise.catch(() =>
        send(socket, { type: 'error', code: 'unavailable', message: 'redis error', id: frame.id, room: frame.room }),
      );
    if (frame.type === 'message' && typeof frame.room === 'string') done(publish(socket, frame));
    else if (frame.type === 'join' && typeof frame.room === 'string') done(join(socket, frame.room));
    else if (frame.type === 'leave' && typeof frame.room === 'string') {
      leave(socket, frame.room);
      send(socket, { type: 'left', room: frame.room });
    } else if (frame.type === 'ping') send(socket, { type: 'pong', id: frame.id ?? null });
    else send(socket, { type: 'error', code: 'unknown_type', message: 'unknown type' });
  });
  socket.on('close', () => {
    for (const name of [...socket.rooms]) leave(socket, name);
  });
  socket.on('error', () => {});
});

// The heartbeat of ws's README: ping everyone, drop those that did not answer the last one.
const heartbeat = setInterval(() => {
  for (const socket of wss.clients) {
    if (!socket.alive) {
      socket.terminate();
      continue;
    }
    socket.alive = false;
    socket.ping();
  }
}, config.heartbeat * 1000);

server.listen(config.port, config.host, 4096);
exitOnSignals(() => {
  clearInterval(heartbeat);
  server.close();
});
exitWithParent();
