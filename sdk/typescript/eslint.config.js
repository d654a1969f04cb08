// ESLint flat config: `npm run lint` (run by test.sh after the build). typescript-eslint's recommended rules,
// not the type-checked set: `tsc` (strict, noUnused*) already type-checks src and test in the build.
import eslint from "@eslint/js";
import { defineConfig } from "eslint/config";
import tseslint from "typescript-eslint";

export default defineConfig(
  { ignores: ["dist/", "build-test/", "node_modules/"] },
  eslint.configs.recommended,
  tseslint.configs.recommended,
);
