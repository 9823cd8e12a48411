/** Where the SDK reports connection events. `console` fits; the default says nothing. */
export interface Logger {
  debug?(message: string): void;
  info?(message: string): void;
  warn?(message: string): void;
  error?(message: string): void;
}

export const silentLogger: Logger = {};
