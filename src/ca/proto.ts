/**
 * Istio's certificate API (src/ca/proto/ca.proto, vendored from istio/api:
 * see src/ca/proto/README.md), loaded at run time with @grpc/proto-loader.
 * Both `ambientd ca` (server) and the agent (client) use this one loader.
 */
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export const CA_PACKAGE = 'istio.v1.auth';
export const CA_SERVICE = 'IstioCertificateService';
/** The full gRPC method path, as istiod and ztunnel use it. */
export const CREATE_CERTIFICATE_PATH = `/${CA_PACKAGE}.${CA_SERVICE}/CreateCertificate`;
/** Metadata key (request.metadata Struct) naming the identity a node agent asks for on behalf of a pod (Istio's). */
export const IMPERSONATED_IDENTITY = 'ImpersonatedIdentity';

/**
 * google.protobuf.Value as proto-loader gives and takes it: camelCase fields
 * whatever keepCase says (protobufjs defines the well-known types itself), and
 * with oneofs `kind` names the one set.
 */
export interface ProtoValue {
  kind?: string;
  stringValue?: string;
  numberValue?: number;
  boolValue?: boolean;
  nullValue?: string;
  structValue?: ProtoStruct;
  listValue?: { values?: ProtoValue[] };
}
export interface ProtoStruct {
  fields?: Record<string, ProtoValue>;
}

/** istio.v1.auth.IstioCertificateRequest, decoded with the options below (int64 as a string). */
export interface IstioCertificateRequest {
  csr: string;
  validity_duration: string | number;
  metadata?: ProtoStruct | null;
}

export interface IstioCertificateResponse {
  cert_chain: string[];
}

const LOADER_OPTIONS: protoLoader.Options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

/**
 * Where the vendored proto is: beside the compiled module when the build
 * copied it there (the image), else in the source tree (a checkout:
 * dist/src/ca/ -> src/ca/proto).
 */
export function caProtoPath(): string {
  const candidates = [new URL('./proto/ca.proto', import.meta.url), new URL('../../../src/ca/proto/ca.proto', import.meta.url)].map((u) => fileURLToPath(u));
  for (const c of candidates) if (fs.existsSync(c)) return c;
  return candidates[candidates.length - 1]!;
}

export interface CaService {
  definition: grpc.ServiceDefinition;
  Client: grpc.ServiceClientConstructor;
}

let loaded: CaService | undefined;

/** The service definition (server) and client constructor (agent), loaded once. */
export function loadCaService(): CaService {
  if (loaded) return loaded;
  const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(caProtoPath(), LOADER_OPTIONS));
  const auth = ((pkg.istio as grpc.GrpcObject | undefined)?.v1 as grpc.GrpcObject | undefined)?.auth as grpc.GrpcObject | undefined;
  const ctor = auth?.[CA_SERVICE] as grpc.ServiceClientConstructor | undefined;
  if (!ctor) throw new Error(`${caProtoPath()} does not define ${CA_PACKAGE}.${CA_SERVICE}`);
  loaded = { definition: ctor.service, Client: ctor };
  return loaded;
}

/** A string field of a Struct, or undefined. */
export function structString(s: ProtoStruct | null | undefined, key: string): string | undefined {
  const v = s?.fields?.[key];
  return typeof v?.stringValue === 'string' ? v.stringValue : undefined;
}
