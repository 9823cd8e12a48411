/** TLS settings for PushClient and PushSender. */

import { type ChannelCredentials, type ChannelOptions, credentials as grpcCredentials } from "@grpc/grpc-js";
import { readFileSync } from "node:fs";

/**
 * TLS for a connection. Each of `ca`, `cert` and `key` is PEM content (a Buffer) or the path
 * of a PEM file (a string), read once when the client or sender is created.
 *
 * - `{}` or `true`: check the server against the default roots (Node's bundled Mozilla roots,
 *   or the file named by GRPC_DEFAULT_SSL_ROOTS_FILE_PATH);
 * - `{ ca }`: against your own CA;
 * - `{ ca, cert, key }`: and present a client certificate (an api that requires mutual TLS).
 *
 * `serverName` overrides the name checked in the server's certificate (connecting by IP).
 */
export interface TlsOptions {
  ca?: Buffer | string;
  cert?: Buffer | string;
  key?: Buffer | string;
  serverName?: string;
}

function pem(source: Buffer | string | undefined, name: string): Buffer | null {
  if (source === undefined) return null;
  if (Buffer.isBuffer(source)) return source;
  try {
    return readFileSync(source);
  } catch (err) {
    throw new TypeError(`TLS: cannot read ${name} file ${source}: ${(err as Error).message}`);
  }
}

/** The channel credentials and options for `tls` (plaintext when it is undefined or false). */
export function tlsChannel(
  tls: TlsOptions | boolean | undefined,
  fallback: ChannelCredentials | undefined,
): { credentials: ChannelCredentials; options: Partial<ChannelOptions> } {
  if (tls === undefined || tls === false) {
    return { credentials: fallback ?? grpcCredentials.createInsecure(), options: {} };
  }
  if (fallback) throw new TypeError("give either tls or credentials, not both");
  const settings: TlsOptions = tls === true ? {} : tls;
  if ((settings.cert === undefined) !== (settings.key === undefined)) {
    throw new TypeError("TLS: a client certificate needs both cert and key");
  }
  const credentials = grpcCredentials.createSsl(
    pem(settings.ca, "ca"),
    pem(settings.key, "key"),
    pem(settings.cert, "cert"),
  );
  const options: Partial<ChannelOptions> = settings.serverName
    ? { "grpc.ssl_target_name_override": settings.serverName, "grpc.default_authority": settings.serverName }
    : {};
  return { credentials, options };
}
