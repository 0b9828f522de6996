# Scenario 1: client credentials against a real provider, with each way
# of authenticating the client that the module supports: client_secret_post,
# private_key_jwt (RS256, ES256) and client_secret_jwt (HS256).  Each
# credential logs in three times (the API is told twice to reject the
# tokens it has seen): three tokens issued, three assertions accepted (the
# provider refuses a client assertion whose jti it has seen), every request
# answered 200 by the API, which verifies the RFC 9068 JWT access token.
#
# Then two misconfigurations a real provider exposes and the Perl mock
# does not: an assertion audience that the provider computes from the Host
# header, and a token request without the resource indicator.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use lib '.';
use t::Interop;
use Test::Nginx::Socket 'no_plan';

master_on();
workers(2);
no_shuffle();

# Three logins for the credential of /api/: the first, then two more after
# the API rejected the token (the module replays the request).
sub three_logins {
    my ($client) = @_;
    my %jti;
    for my $i (1 .. 3) {
        api_revoke() if $i > 1;
        my $r = hit(GET => "/api/$client/$i");
        is($r->{status}, 200, "$client: request $i answered by the API");
        my $j = $r->{json} // {};
        is($j->{client_id}, $client, "$client: the token's client_id");
        is($j->{sub}, $client, "$client: the token's sub");
        is($j->{typ}, 'at+jwt', "$client: an RFC 9068 access token");
        $jti{ $j->{jti} // '' }++;
    }
    is(scalar(grep { length } keys %jti), 3, "$client: three different tokens");
    my $s = op_stats();
    is($s->{ok}{client_credentials}, 3, "$client: three tokens issued");
    is($s->{by_client}{$client}{client_credentials}, 3,
       "$client: all by this client");
    is_deeply($s->{errors}, {}, "$client: no error at the provider");
    is_deeply($s->{duplicate_headers}, {},
              "$client: no header sent twice");
}

no warnings 'once';
*Test::Nginx::Util::three_logins = \&three_logins;

run_tests();

__DATA__

=== TEST 1: client_secret_post
--- http_config
    tokenrefresh_zone tokens:1m;
--- config
    location /api/ {
        tokenrefresh tokens cc-post;
        tokenrefresh_login /_login;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }

    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=cc-post&client_secret=cc-post-secret-0123456789abcdef&resource=$TEST_NGINX_RESOURCE_FORM";
        proxy_pass http://op/token;
    }
--- init
three_logins('cc-post');
--- request
GET /opcalls
--- response_body
calls=3 client_credentials=3
--- no_error_log
[error]



=== TEST 2: private_key_jwt, RS256 with a key id; audience: the token endpoint's URL
oidc-provider computes the token endpoint's URL from the Host header of
the request: the token location sends the provider's own host name.
--- http_config
    tokenrefresh_zone tokens:1m;
--- config
    location /api/ {
        tokenrefresh tokens cc-rs256;
        tokenrefresh_login /_login;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }

    location = /_login {
        internal;
        tokenrefresh_client_assertion alg=RS256 key=$TEST_NGINX_KEYS/rs256.pem
            kid=k1 client_id=cc-rs256
            audience=http://127.0.0.1:$TEST_NGINX_OP_PORT/token;
        proxy_set_header Host 127.0.0.1:$TEST_NGINX_OP_PORT;
        proxy_set_body "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=$tokenrefresh_client_assertion&resource=$TEST_NGINX_RESOURCE_FORM";
        proxy_pass http://op/token;
    }
--- init
three_logins('cc-rs256');
--- request
GET /opcalls
--- response_body
calls=3 client_credentials=3
--- no_error_log
[error]



=== TEST 3: private_key_jwt, ES256; audience: the issuer identifier
--- http_config
    tokenrefresh_zone tokens:1m;
--- config
    location /api/ {
        tokenrefresh tokens cc-es256;
        tokenrefresh_login /_login;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }

    location = /_login {
        internal;
        tokenrefresh_client_assertion alg=ES256 key=$TEST_NGINX_KEYS/es256.pem
            client_id=cc-es256 audience=http://127.0.0.1:$TEST_NGINX_OP_PORT
            lifetime=30s;
        proxy_set_body "grant_type=client_credentials&client_id=cc-es256&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=$tokenrefresh_client_assertion&resource=$TEST_NGINX_RESOURCE_FORM";
        proxy_pass http://op/token;
    }
--- init
three_logins('cc-es256');
--- request
GET /opcalls
--- response_body
calls=3 client_credentials=3
--- no_error_log
[error]



=== TEST 4: client_secret_jwt, HS256 with a 64-byte secret
--- http_config
    tokenrefresh_zone tokens:1m;
--- config
    location /api/ {
        tokenrefresh tokens cc-hs256;
        tokenrefresh_login /_login;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }

    location = /_login {
        internal;
        tokenrefresh_client_assertion alg=HS256
            secret=$TEST_NGINX_KEYS/hs256.secret client_id=cc-hs256
            audience=http://127.0.0.1:$TEST_NGINX_OP_PORT/token;
        proxy_set_header Host 127.0.0.1:$TEST_NGINX_OP_PORT;
        proxy_set_body "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=$tokenrefresh_client_assertion&resource=$TEST_NGINX_RESOURCE_FORM";
        proxy_pass http://op/token;
    }
--- init
three_logins('cc-hs256');
--- request
GET /opcalls
--- response_body
calls=3 client_credentials=3
--- no_error_log
[error]



=== TEST 5: the audience is the token endpoint's URL, but nginx sends "Host: op"
The configuration the guide shows (audience=https://idp.example.com/oauth/token
with proxy_pass https://idp/oauth/token through an upstream named "idp"):
oidc-provider expects the URL built from the Host header, "http://op/token",
and refuses the assertion with 401 invalid_client.  The module refuses to
log in again at once (the credential is failed, back-off at its maximum).
--- http_config
    tokenrefresh_zone tokens:1m;
--- config
    location /api/ {
        tokenrefresh tokens cc-rs256;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }

    location = /_login {
        internal;
        tokenrefresh_client_assertion alg=RS256 key=$TEST_NGINX_KEYS/rs256.pem
            kid=k1 client_id=cc-rs256
            audience=http://127.0.0.1:$TEST_NGINX_OP_PORT/token;
        proxy_set_body "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=$tokenrefresh_client_assertion&resource=$TEST_NGINX_RESOURCE_FORM";
        proxy_pass http://op/token;
    }
--- init
my $r = hit(GET => '/api/a');
is($r->{status}, 502, 'the login was refused: 502');
ok(defined $r->{headers}{'retry-after'}, 'with Retry-After');
is(hit(GET => '/api/b')->{status}, 502, 'and the next request fails at once');
my $s = op_stats();
is($s->{by_status}{401}, 1, 'the provider answered 401');
is($s->{errors}{client_credentials}{invalid_client}, 1, 'invalid_client');
ok($s->{error_details}{'audience (aud) must equal the endpoint url, issuer identifier or token endpoint url'},
   'because of the audience');
my ($req) = grep { $_->{status} == 401 } @{ op_requests() };
my ($host) = map { $_->[1] } grep { lc $_->[0] eq 'host' } @{ $req->{headers} };
is($host, 'op', 'nginx sent the upstream\'s name as Host');
--- request
GET /opcalls
--- response_body
calls=1 client_credentials=1 failed=1
--- error_log eval
qr/login of credential "cc-rs256" .*(refused|failed)/



=== TEST 6: no resource indicator: an opaque token the API cannot verify
Without resource=, oidc-provider issues an opaque access token for
client_credentials (no defaultResource is configured, as by default).  The
API rejects every such token; the module replays each request once and
then passes the 401 to the client, and stops asking the provider for
tokens the API rejects: the loop guard lets rejections start three
refreshes at once (here logins), then one per back-off interval, so the
five requests, sent within one interval, cause four logins at most.
--- http_config
    tokenrefresh_zone tokens:1m;
--- config
    location /api/ {
        tokenrefresh tokens cc-post;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }

    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=cc-post&client_secret=cc-post-secret-0123456789abcdef";
        proxy_pass http://op/token;
    }
--- init
for my $i (1 .. 5) {
    my $r = hit(GET => "/api/$i");
    is($r->{status}, 401, "request $i: the API's 401 reaches the client");
    like($r->{headers}{'www-authenticate'} // '', qr/^Bearer /,
         "request $i: with its WWW-Authenticate");
}
my $a = api_stats();
is($a->{unauthorized}, 10, 'each request went twice (one replay)');
ok($a->{by_reason}{ERR_JWS_INVALID} || $a->{by_reason}{ERR_JWT_INVALID},
   'the token is not a JWT') or diag explain $a;
my $s = op_stats();
cmp_ok($s->{ok}{client_credentials}, '<=', 4, 'the first login and three more at most, not one per request');
is($s->{by_client}{'cc-post'}{client_credentials}, $s->{calls}, 'nothing else');
--- request
GET /opcalls
--- response_body_like: ^calls=[1-4] client_credentials=[1-4]$
--- error_log eval
qr/the upstream keeps rejecting the tokens of credential "cc-post"/
