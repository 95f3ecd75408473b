'use strict';
// Shared by the peers: settings from the environment, /health, and a clean exit.

const http = require('http');

function settings(defaultName) {
  const port = Number(process.env.PORT || 8765);
  return {
    host: process.env.HOST || '127.0.0.1',
    port,
    redisUrl: process.env.REDIS_URL || 'redis://127.0.0.1:6379/0',
    instance: process.env.INSTANCE_ID || `${defaultName}:${port}`,
    heartbeat: Number(process.env.HEARTBEAT || 20),
  };
}

// GET /health answers 200 so the bench can wait for readiness the same way for
// every server; anything else that is not a WebSocket upgrade is a 404.
function healthServer() {
  return http.createServer((request, response) => {
    if (request.method === 'GET' && request.url === '/health') {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end('{"status":"ok"}');
      return;
    }
    response.writeHead(404);
    response.end();
  });
}

function exitOnSignals(cleanup) {
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.on(signal, () => {
      try {
        cleanup();
      } finally {
        process.exit(0);
      }
    });
  }
}

// A peer has no reason to outlive the bench that started it: with
// EXIT_WITH_PARENT=1, exit when the parent goes away (its stdin pipe closes).
function exitWithParent() {
  if (process.env.EXIT_WITH_PARENT !== '1') return;
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}

module.exports = { settings, healthServer, exitOnSignals, exitWithParent };
