// A stand-in for a second ambientd agent on the hand-over socket, for the
// privileged restart and adversarial tests. Its file is named cli.js and it
// runs as `node .../cli.js agent ...`, so the running agent's SO_PEERCRED
// check sees "an agent process" (as a real successor): what is tested is the
// hand-over protocol and its deadlines, not the peer check (tested apart with
// processes that are not agents).
//
//   node cli.js agent take    SOCKET NODE   ask for the sockets; print {"size","fromPid"} or {"error"};
//                                           then read a command per stdin line: "abort" | "adopt" | "hang"
//   node cli.js agent records SOCKET NODE LINE...   send RECORDS then each LINE; exit
//   node cli.js agent raw     SOCKET NODE LINE      send LINE; print the answer frame's JSON, or {"closed"}
import { loadNative } from '../../../src/datapath/native.js';
import { requestHandover, HANDOVER_VERSION } from '../../../src/lifecycle/handover.js';
import { verifyAgentPeer } from '../../../src/lifecycle/peer.js';

const [, , word, mode, socket, node, ...rest] = process.argv;
const print = (o: unknown): void => {
  process.stdout.write(JSON.stringify(o) + '\n');
};
const native = loadNative();

if (word !== 'agent' || !socket || !node) {
  process.stderr.write('usage: cli.js agent take|records SOCKET NODE ...\n');
  process.exit(2);
}

if (mode === 'records') {
  const fd = native.unixConnect(socket, 2000);
  if (fd < 0) {
    print({ error: `connect ${fd}` });
    process.exit(1);
  }
  native.sendFds(fd, Buffer.from(`RECORDS ${HANDOVER_VERSION} ${process.pid} ${node}\n${rest.map((l) => l + '\n').join('')}`), [], 2000);
  // wait for the agent to read it all (it closes on bad input) or 1 s
  const r = native.recvFds(fd, 64, 1000);
  native.closeFd(fd);
  print({ sent: rest.length, closed: typeof r !== 'number' && r.data.length === 0 });
} else if (mode === 'raw') {
  const fd = native.unixConnect(socket, 2000);
  if (fd < 0) {
    print({ error: `connect ${fd}` });
    process.exit(1);
  }
  native.sendFds(fd, Buffer.from(`${(rest[0] ?? '').replace('$PID', String(process.pid))}\n`), [], 2000);
  const head = native.recvFds(fd, 4, 2000);
  if (typeof head === 'number' || head.data.length < 4) {
    print({ closed: true });
    process.exit(0);
  }
  const body = native.recvFds(fd, head.data.readUInt32BE(0), 2000);
  native.closeFd(fd);
  print({ frame: typeof body === 'number' ? null : JSON.parse(body.data.toString()) });
} else if (mode === 'take') {
  let inh: ReturnType<typeof requestHandover> = null;
  try {
    inh = requestHandover(native, socket, node, { verifyPeer: verifyAgentPeer });
  } catch (e) {
    print({ error: (e as Error).message });
    process.exit(0);
  }
  if (!inh) {
    print({ error: 'nobody serves there' });
    process.exit(0);
  }
  print({ size: inh.size, fromPid: inh.fromPid });
  const taken = inh;
  let buf = '';
  process.stdin.on('data', (c: Buffer) => {
    buf += c.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const cmd = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (cmd === 'abort') {
        taken.abort('test: pretend to crash');
        print({ aborted: true });
        process.exit(0);
      }
      if (cmd === 'adopt') {
        taken.closeRest();
        print({ ack: taken.ack() });
        process.exit(0);
      }
      if (cmd === 'hang') print({ hanging: true }); // keeps the sockets and never adopts
    }
  });
} else {
  process.stderr.write(`unknown mode ${mode}\n`);
  process.exit(2);
}
