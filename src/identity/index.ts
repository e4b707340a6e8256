export * from './spiffe.js';
export * from './ca.js';
export * from './manager.js';
