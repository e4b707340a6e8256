/**
 * Single place that configures @peculiar/x509 to use Node's WebCrypto.
 * Import `x509` from here (never directly) so the provider is always set.
 */
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(globalThis.crypto);

export { x509 };
