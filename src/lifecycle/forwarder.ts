/**
 * The records half of a hand-over, on the old agent's side: while it drains,
 * each connection that ends is sent to the successor's hand-over socket
 * ("RECORDS <hand-over version> <pid> <node>", then one line per record in
 * the versioned format of records.ts), which counts it in its metrics.
 */
import net from 'node:net';
import { HANDOVER_VERSION } from './handover.js';
import { encodeRecord } from './records.js';
import type { TrackedConnection } from '../proxy/connections.js';

/**
 * Old agent, draining: sends each connection record that closes to the
 * successor's hand-over socket (best effort: what cannot be sent is counted
 * by the caller via the returned stats). end() flushes and closes.
 */
export class RecordForwarder {
  private sock: net.Socket | null = null;
  private sent = 0;
  private lost = 0;
  private failed = false;

  constructor(
    private readonly socketPath: string,
    private readonly node: string,
  ) {}

  send(rec: TrackedConnection): void {
    if (this.failed) {
      this.lost++;
      return;
    }
    if (!this.sock) {
      const s = net.connect(this.socketPath);
      s.on('error', () => {
        this.failed = true;
      });
      s.write(`RECORDS ${HANDOVER_VERSION} ${process.pid} ${this.node}\n`);
      this.sock = s;
    }
    this.sock.write(encodeRecord(rec) + '\n');
    this.sent++;
  }

  /** Flushes what was written and closes; resolves within timeoutMs in any case. */
  end(timeoutMs = 2000): Promise<{ sent: number; lost: number }> {
    const s = this.sock;
    const result = (): { sent: number; lost: number } => ({ sent: this.failed ? 0 : this.sent, lost: this.lost + (this.failed ? this.sent : 0) });
    if (!s) return Promise.resolve(result());
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        s.destroy();
        resolve(result());
      }, timeoutMs);
      s.once('close', () => {
        clearTimeout(t);
        resolve(result());
      });
      s.end();
    });
  }
}
