// Test-only HTTP proxy for tests/conformance/run.sh: forwards every request
// unchanged (Host and Origin included, so DNS-rebinding checks still see the
// client's values) to UPSTREAM, adding `Authorization: Bearer $BEARER` when
// the request has none — the official conformance suite cannot send one.
// This lets the suite run against the normal stack-server build.
//
//   UPSTREAM=127.0.0.1:8080 BEARER=sk_live_… LISTEN=8081 node bearer-proxy.mjs
import http from 'node:http';

const [host, port] = process.env.UPSTREAM.split(':');
const bearer = process.env.BEARER;

http
  .createServer((req, res) => {
    const headers = { ...req.headers };
    if (!headers.authorization) headers.authorization = `Bearer ${bearer}`;
    const up = http.request(
      { host, port, method: req.method, path: req.url, headers },
      (r) => {
        res.writeHead(r.statusCode, r.headers);
        r.pipe(res);
      }
    );
    up.on('error', () => {
      res.writeHead(502);
      res.end();
    });
    req.pipe(up);
  })
  .listen(Number(process.env.LISTEN), '127.0.0.1');
