// CometError lives in backends/errors.ts (the backends throw it too, and imports point down: src → backends);
// src/ keeps importing it from here.
export { CometError, fail } from '../backends/errors.ts';
