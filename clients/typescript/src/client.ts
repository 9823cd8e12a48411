/**
 * PushClient (Node): the device side of `Edge.Connect`, over a gRPC stream (grpc-js).
 * The protocol logic is in core.ts, shared with the browser build (browser/, WebSocket).
 */

import {
  type ChannelCredentials,
  type ChannelOptions,
  type ClientDuplexStream,
  type StatusObject,
  status,
} from "@grpc/grpc-js";

import {
  type ClientOptions,
  ClientCore,
  type Connection,
  type ConnectionEvents,
  type FrameLimitNote,
  type Transport,
} from "./core";
import { errorFromGrpc } from "./grpc-errors";
import { type ClientFrame, EdgeClient, type ServerFrame } from "./gen/pushplat/v1/edge";
import type { Message } from "./gen/pushplat/v1/message";
import { type TlsOptions, tlsChannel } from "./tls";
import { VERSION } from "./version";

export {
  ACK_LINGER_MS,
  DEFAULT_CLOSE_GRACE_MS,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  MAX_ACK_IDS,
  MISSED_HEARTBEATS,
} from "./core";

/** gRPC's default receive limit, used until an edge announces larger frames in its Welcome
 * (maxFrameBytes); the client then reconnects at once with a limit to match. */
export const DEFAULT_RECEIVE_LIMIT = 4 * 1024 * 1024;
const RECEIVE_LIMIT_OPTION = "grpc.max_receive_message_length";

export interface PushClientOptions extends ClientOptions {
  /** Connect over TLS (`true`: default roots; see {@link TlsOptions}). Default: plaintext. */
  tls?: TlsOptions | boolean;
  /** Raw grpc-js credentials, instead of `tls`. Default: insecure (plaintext) credentials. */
  credentials?: ChannelCredentials;
  channelOptions?: Partial<ChannelOptions>;
}

/** `Edge.Connect` streams: one fresh channel per connection attempt. */
class GrpcTransport implements Transport<Message> {
  readonly target: string;
  private readonly credentials: ChannelCredentials;
  private readonly channelOptions: Partial<ChannelOptions>;
  /** The receive limit of the next connection (unless channelOptions set one). */
  private receiveLimit = DEFAULT_RECEIVE_LIMIT;
  private readonly receiveLimitPinned: boolean;

  constructor(edge: string, options: PushClientOptions) {
    this.target = edge;
    const channel = tlsChannel(options.tls, options.credentials);
    this.credentials = channel.credentials;
    this.channelOptions = { ...channel.options, ...options.channelOptions };
    this.receiveLimitPinned = options.channelOptions?.[RECEIVE_LIMIT_OPTION] !== undefined;
  }

  acceptFrames(maxFrameBytes: number): FrameLimitNote | null {
    if (maxFrameBytes <= this.receiveLimit) return null;
    if (this.receiveLimitPinned) {
      return { reconnect: false, detail: `over the ${RECEIVE_LIMIT_OPTION} you set` };
    }
    // Frames this large would fail the stream on this channel, and the edge would resend the
    // same frame after every reconnect: the next channel gets a limit to match.
    this.receiveLimit = maxFrameBytes;
    return { reconnect: true, detail: "reconnecting with a receive limit to match" };
  }

  open(events: ConnectionEvents<Message>): Connection {
    // A fresh channel (TCP connection) per attempt: behind a layer-4 load balancer a reused
    // channel would stick to the edge that just told us to go away. grpc-js shares
    // subchannels between clients unless told otherwise.
    const stub = new EdgeClient(this.target, this.credentials, {
      ...(this.receiveLimitPinned ? {} : { [RECEIVE_LIMIT_OPTION]: this.receiveLimit }),
      ...this.channelOptions,
      "grpc.use_local_subchannel_pool": 1,
    });
    const call: ClientDuplexStream<ClientFrame, ServerFrame> = stub.connect();
    call.on("data", (frame: ServerFrame) => events.frame(frame));
    // grpc-js reports a failed call both as an 'error' event (which must be listened to)
    // and as a 'status' event; the status is the one place both outcomes arrive.
    call.on("error", () => {});
    call.on("status", (st: StatusObject) => {
      events.end(
        st.code === status.OK ? null : errorFromGrpc({ code: st.code, details: st.details, metadata: st.metadata }),
      );
    });
    return {
      write: (frame, done) => {
        call.write(frame, done);
        return true;
      },
      end: () => call.end(),
      cancel: () => {
        call.cancel();
        stub.close();
      },
    };
  }
}

/**
 * Holds a stream to an edge and yields the messages pushed to this device.
 *
 * ```ts
 * const client = new PushClient("127.0.0.1:50051", { token });
 * for await (const message of client) handle(message);
 * ```
 *
 * See {@link ClientCore} for acks, dedup, reconnects and errors.
 */
export class PushClient extends ClientCore<Message> {
  constructor(edge: string, options: PushClientOptions = {}) {
    if (!edge) throw new TypeError("PushClient needs the edge address, e.g. '127.0.0.1:50051'");
    super(new GrpcTransport(edge, options), options, `pushplat-node/${VERSION}`);
  }
}
