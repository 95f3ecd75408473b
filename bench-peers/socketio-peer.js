'use strict';
// Socket.IO 4 with @socket.io/redis-adapter, WebSocket transport only. Events
// mirror shared/PROTOCOL.md's frames so `wsfleet bench` can drive it with the same
// workload: the client emits `join` (room), `leave` (room) and `message`
// ({room, content, id}); the server emits `welcome`, `joined`, `left`, `ack` and
// `message` ({room, offset, from, content, ts}) to the room through the adapter.

const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const Redis = require('ioredis');
const { settings, healthServer, exitOnSignals, exitWithParent } = require('./common');

const config = settings('socketio-peer');
const pub = new Redis(config.redisUrl);
const sub = pub.duplicate();
const server = healthServer();
const io = new Server(server, {
  transports: ['websocket'],
  serveClient: false,
  perMessageDeflate: false,
  maxHttpBufferSize: 64 * 1024,
  pingInterval: config.heartbeat * 1000,
  pingTimeout: 20000,
});
io.adapter(createAdapter(pub, sub));

io.on('connection', (socket) => {
  socket.emit('welcome', { conn: socket.id, server: config.instance, heartbeat: config.heartbeat });
  socket.on('join', (room) => {
    if (typeof room !== 'string') return;
    socket.join(room);
    socket.emit('joined', { room, offset: null, epoch: null, recovered: false, replayed: 0 });
  });
  socket.on('ping', (id) => {
    socket.emit('pong', { id: id ?? null });
  });
  socket.on('leave', (room) => {
    socket.leave(room);
    socket.emit('left', { room });
  });
  socket.on('message', async (frame) => {
    if (frame === null || typeof frame !== 'object' || typeof frame.room !== 'string') return;
    try {
      const offset = String(await pub.incr(`peer:{${frame.room}}:seq`));
      io.to(frame.room).emit('message', {
        room: frame.room,
        offset,
        from: socket.id,
        content: frame.content,
        ts: Date.now(),
      });
      socket.emit('ack', { id: frame.id ?? null, room: frame.room, offset });
    } catch {
      socket.emit('error', { code: 'unavailable', id: frame.id, room: frame.room });
    }
  });
});

server.listen(config.port, config.host, 4096);
exitOnSignals(() => {
  io.close();
});
exitWithParent();
