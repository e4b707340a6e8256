# ambientd node agent image: `make image` (docs/IMAGE.md). BPF objects, the
# native addon and the TypeScript are all built here, at image build time,
# never on the node. A standard Dockerfile: it builds unmodified against the
# official node images; on the development machine against local stand-ins.
FROM node:20-bookworm AS build
# clang/llvm pinned to one Debian package version (bookworm's): the BPF
# object, and so what the kernel's verifier sees, depends on the compiler.
ARG LLVM_DEB_VERSION=1:14.0.6-12
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang-14=${LLVM_DEB_VERSION} llvm-14=${LLVM_DEB_VERSION} libbpf-dev libelf-dev zlib1g-dev pkg-config make g++ python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json binding.gyp ./
COPY native ./native
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY bpf ./bpf
COPY src ./src
# tools/ (sandbox, demo, nettool), test/ and bench/ only so that tsc type-checks
# the whole tree (tsconfig.json includes them); the image below ships dist/src
# alone, where `ambientd sandbox|demo` answer TOOLS_NOT_INSTALLED.
COPY tools ./tools
COPY test ./test
COPY bench ./bench
RUN clang-14 -g -O2 -target bpf -Wall -Werror -I/usr/include/$(uname -m)-linux-gnu -c bpf/ambient.bpf.c -o bpf/ambient.bpf.o \
 && npx tsc -p tsconfig.json \
 && npm prune --omit=dev

FROM node:20-bookworm-slim
# Only what the agent needs: libbpf (and libelf) for the addon; nsenter (run
# by bin/enter-host-cgroupns, the DaemonSet's command) is in util-linux, which
# the base already has. The agent runs no other program; bpftool/iproute2 for operators are on the
# node, and `ambientd inspect` decodes the pinned maps itself.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libbpf1 libelf1 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/ambientd
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/build/Release/ambient_native.node ./build/Release/ambient_native.node
COPY --from=build /src/bpf/ambient.bpf.o ./bpf/ambient.bpf.o
COPY --from=build /src/dist/src ./dist/src
# the DaemonSet's command: enter the host cgroup namespace, or let the agent say why not
COPY scripts/image/enter-host-cgroupns.sh ./bin/enter-host-cgroupns
# the vendored Istio certificate API (and its license), loaded at run time by `ambientd ca` and an agent with caAddress
COPY --from=build /src/src/ca/proto ./dist/src/ca/proto
# Runs as root with CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN (setns, cgroup attach),
# CAP_SYS_PTRACE (/proc/<pid>/ns/net of pods) — see the DaemonSet in deploy/,
# whose command is bin/enter-host-cgroupns /proc/1/ns/cgroup node dist/src/cli.js.
ENTRYPOINT ["node", "/opt/ambientd/dist/src/cli.js"]
CMD ["agent", "--config", "/etc/ambientd/agent.yaml"]
