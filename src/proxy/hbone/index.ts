export * from './common.js';
export * from './server.js';
export * from './client.js';
export * from './tunnel.js';
