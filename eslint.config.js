// ambientd lint rules: eslint's and typescript-eslint's recommended sets, with
// the few choices this code base makes on purpose. Formatting is prettier's job
// (.prettierrc.json); `make lint` runs both, and clang-format for native/ and bpf/.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'build/**', 'node_modules/**', 'shared/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      // unused values are errors, except `_`-prefixed ones (kept on purpose: callbacks' fixed signatures)
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // `catch {}` with a comment saying why nothing is done is the house style for best-effort cleanup
      'no-empty': ['error', { allowEmptyCatch: true }],
      // control characters are matched on purpose (header and log validation)
      'no-control-regex': 'off',
      // errors carry their cause (new AmbientError(..., { cause })); rethrowing without one is caught by review
      'preserve-caught-error': 'off',
    },
  },
  {
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      // tests reach into results they just asserted exist
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },
);
