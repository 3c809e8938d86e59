// Verifies deliveries with the npm `standardwebhooks` package, the JavaScript verifier receivers use.
// stdin: {"secrets": {"name": "whsec_..."}, "deliveries": [{"headers": {...}, "body": "..."}]}
// stdout: one object per delivery, {"name": true|false} for each secret (true: it verifies).
"use strict";
const { Webhook } = require("standardwebhooks");

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const { secrets, deliveries } = JSON.parse(input);
  const verdicts = deliveries.map(({ headers, body }) => {
    const verdict = {};
    for (const [name, secret] of Object.entries(secrets)) {
      try {
        new Webhook(secret).verify(body, headers);
        verdict[name] = true;
      } catch (err) {
        verdict[name] = false;
      }
    }
    return verdict;
  });
  process.stdout.write(JSON.stringify(verdicts));
});
