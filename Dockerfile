# ambientd node agent image (not built on the development machine: it has no
# container engine). BPF objects, the native addon and the TypeScript are all
# built here, at image build time, never on the node.
FROM node:20-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang-14 llvm-14 libbpf-dev libelf-dev zlib1g-dev pkg-config make g++ python3 \
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
# libbpf runtime for the addon; bpftool and iproute2 for operators.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libbpf1 libelf1 bpftool iproute2 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/ambientd
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/build/Release/ambient_native.node ./build/Release/ambient_native.node
COPY --from=build /src/bpf/ambient.bpf.o ./bpf/ambient.bpf.o
COPY --from=build /src/dist/src ./dist/src
# the vendored Istio certificate API (and its license), loaded at run time by `ambientd ca` and an agent with caAddress
COPY --from=build /src/src/ca/proto ./dist/src/ca/proto
# Runs as root with CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN (setns, cgroup attach),
# CAP_SYS_PTRACE (/proc/<pid>/ns/net of pods) — see the DaemonSet in deploy/.
ENTRYPOINT ["node", "/opt/ambientd/dist/src/cli.js"]
CMD ["agent", "--config", "/etc/ambientd/agent.yaml"]
