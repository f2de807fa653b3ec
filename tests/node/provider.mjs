// A real OpenID Connect provider for the single sign-on tests (the certified `oidc-provider`
// package), with its development login form: any login name signs in as that account.
//
//   node provider.mjs CONFIG_JSON
//
// CONFIG_JSON: {"port": 0, "client_id": "...", "client_secret": "...", "redirect_uri": "...",
//               "post_logout_redirect_uri": "..." (RP-initiated logout returns there),
//               "accounts": {"ada": {"email": "...", "name": "...", "groups": ["..."]}}}
// Prints `listening <issuer>` once it answers; stops on SIGTERM.
import http from "node:http";

import Provider from "oidc-provider";

const config = JSON.parse(process.argv[2]);
const server = http.createServer();

server.listen(config.port || 0, "127.0.0.1", () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: config.client_id,
        client_secret: config.client_secret,
        redirect_uris: [config.redirect_uri],
        post_logout_redirect_uris: config.post_logout_redirect_uri
          ? [config.post_logout_redirect_uri]
          : [],
        response_types: ["code"],
        grant_types: ["authorization_code"],
        token_endpoint_auth_method: "client_secret_post",
      },
    ],
    claims: {
      openid: ["sub"],
      email: ["email", "email_verified"],
      profile: ["name", "given_name", "family_name", "preferred_username"],
      groups: ["groups"],
    },
    scopes: ["openid", "email", "profile", "groups"],
    async findAccount(ctx, id) {
      const account = config.accounts[id] || {};
      return {
        accountId: id,
        async claims() {
          return { sub: id, preferred_username: id, email_verified: true, ...account };
        },
      };
    },
    cookies: { keys: ["test-only-cookie-key-0123456789"] },
  });
  provider.proxy = false;
  server.on("request", provider.callback());
  console.log(`listening ${issuer}`);
});

process.on("SIGTERM", () => server.close(() => process.exit(0)));
