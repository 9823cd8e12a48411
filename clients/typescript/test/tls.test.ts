/** TLS in PushClient and PushSender, against fake servers with certificates made at test time. */

import { ServerCredentials, status } from "@grpc/grpc-js";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { PushClient, PushError, PushSender } from "../src/index";
import { FakeEdge, FakePush, msg, within } from "./fakes";

// openssl makes the certificates here, so nothing secret is committed.
let dir = "";

function openssl(...args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
}

function makeCA(name: string): void {
  openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
    "-subj", `/CN=${name}`, "-keyout", `${name}.key`, "-out", `${name}.crt`);
}

function issue(ca: string, name: string): void {
  writeFileSync(join(dir, `${name}.ext`),
    "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n");
  openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", `/CN=${name}`,
    "-keyout", `${name}.key`, "-out", `${name}.csr`);
  openssl("x509", "-req", "-in", `${name}.csr`, "-CA", `${ca}.crt`, "-CAkey", `${ca}.key`, "-CAcreateserial",
    "-days", "1", "-extfile", `${name}.ext`, "-out", `${name}.crt`);
}

const file = (name: string): string => join(dir, name);
const read = (name: string): Buffer => readFileSync(file(name));

function serverCreds(clientCA?: string): ServerCredentials {
  return ServerCredentials.createSsl(
    clientCA ? read(`${clientCA}.crt`) : null,
    [{ private_key: read("server.key"), cert_chain: read("server.crt") }],
    Boolean(clientCA),
  );
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), "pushplat-tls-"));
  makeCA("ca");
  makeCA("other");
  makeCA("clients");
  issue("ca", "server");
  issue("clients", "backend");
});

after(() => rmSync(dir, { recursive: true, force: true }));

async function sendOnce(sender: PushSender): Promise<PushError | null> {
  try {
    await sender.send({ deviceId: "d1", payload: "x" });
    return null;
  } catch (err) {
    return err as PushError;
  } finally {
    sender.close();
  }
}

describe("TLS", () => {
  test("a sender checks the api against its CA (a file path or PEM bytes)", async () => {
    const api = await new FakePush().start(serverCreds());
    try {
      assert.equal(await sendOnce(new PushSender(api.address, { tls: { ca: file("ca.crt") } })), null);
      assert.equal(await sendOnce(new PushSender(api.address, { tls: { ca: read("ca.crt") } })), null);
      assert.equal(api.requests.length, 2);
      for (const [name, options] of [
        ["plaintext", {}],
        ["another CA", { tls: { ca: file("other.crt") } }],
        ["default roots", { tls: true }],
      ] as const) {
        const err = await sendOnce(new PushSender(api.address, { ...options, timeoutMs: 2000 }));
        assert.ok(err instanceof PushError, name);
        assert.equal(err.code, status.UNAVAILABLE, `${name}: ${err.message}`);
      }
    } finally {
      await api.stop();
    }
  });

  test("mutual TLS: the sender presents a client certificate", async () => {
    const api = await new FakePush().start(serverCreds("clients"));
    try {
      const without = await sendOnce(new PushSender(api.address, { tls: { ca: file("ca.crt") }, timeoutMs: 2000 }));
      assert.ok(without instanceof PushError);
      const tls = { ca: file("ca.crt"), cert: file("backend.crt"), key: file("backend.key") };
      assert.equal(await sendOnce(new PushSender(api.address, { tls })), null);
    } finally {
      await api.stop();
    }
  });

  test("a device receives over TLS", async () => {
    const edge = await new FakeEdge().start(serverCreds());
    const client = new PushClient(edge.address, { deviceId: "d1", tls: { ca: file("ca.crt") } }).start();
    try {
      const conn = await edge.nextConn();
      conn.welcome({ sessionId: "s1" });
      conn.push(msg("m1", { payload: Buffer.from("over tls") }));
      const next = await within(client[Symbol.asyncIterator]().next(), 3000, "a message");
      assert.equal(next.value?.messageId, "m1");
    } finally {
      await client.close();
      await edge.stop();
    }
  });

  test("bad settings are clear errors", () => {
    assert.throws(() => new PushSender("127.0.0.1:1", { tls: { ca: file("missing.crt") } }), /cannot read ca file/);
    assert.throws(() => new PushSender("127.0.0.1:1", { tls: { cert: file("backend.crt") } }), /needs both cert and key/);
  });
});
