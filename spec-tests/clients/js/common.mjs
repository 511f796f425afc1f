// Shared by the matrix-js-sdk interop scripts: arguments, `ok <step>` reporting, a hard deadline.
import { logger } from "matrix-js-sdk/lib/logger.js";

logger.disableAll?.();

/** `--name value` pairs; a flag without a value is `true`. */
export const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith("--")) acc.push([a.slice(2), all[i + 1]?.startsWith("--") || all[i + 1] === undefined ? true : all[i + 1]]);
    return acc;
  }, []),
);

/** Prints `ok step`, or `FAIL step: detail` and exits 1. */
export function check(cond, step, detail = "") {
  if (!cond) {
    console.log(`FAIL ${step}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    process.exit(1);
  }
  console.log(`ok ${step}`);
}

/** Exits 1 if the script has not finished within `seconds`. */
export function deadline(seconds) {
  setTimeout(() => {
    console.log(`FAIL timeout: not finished within ${seconds} s`);
    process.exit(1);
  }, seconds * 1000).unref();
}

/** Runs `main`, exiting 0 when it resolves and 1 (with the error) when it throws. */
export function run(main) {
  main().then(
    () => process.exit(0),
    (e) => {
      console.log(`FAIL unexpected error: ${e?.errcode ?? ""} ${e?.message ?? e}`);
      process.exit(1);
    },
  );
}
