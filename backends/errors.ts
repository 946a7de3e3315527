// A CometError is a user-facing error: its message says what is wrong and where (file, tensor, field,
// expected vs found). The CLI and the server print it as one line; anything else is a bug and keeps its stack.
export class CometError extends Error {
  constructor(message: string, readonly code = 'invalid_input') {
    super(message);
    this.name = 'CometError';
  }
}

export const fail = (message: string, code?: string): never => {
  throw new CometError(message, code);
};
