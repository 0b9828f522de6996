# Scenario 3: the provider revokes the grant behind a refresh token.
#
# oidc-provider answers a refresh with a revoked grant's refresh token with
# 400 invalid_grant.  The module drops the refresh token and logs in again
# when the credential has a login (here: client credentials of the same
# client), or fails cleanly with its failure status when it has none,
# until the operator logs in again and gives a new seed.
#
# Grants are revoked in two ways: by the provider's admin (the test's
# /admin/revoke, as an operator or a user's "log out everywhere" does) and
# by the provider itself, when a rotated refresh token comes back (reuse
# detection: someone else used a copy of the credential's refresh token).
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use lib '.';
use t::Interop;
use Test::Nginx::Socket 'no_plan';

master_on();
workers(2);
worker_connections(1024);
no_shuffle();

put('key', random_key() . "\n");
put('seed-erin', login_seed('erin') . "\n");
put('seed-dave', login_seed('dave') . "\n");
my $frank = login_seed('frank');
put('seed-frank', "$frank\n");
put('seed-gina', login_seed('gina') . "\n");
put('seed-ivan', login_seed('ivan') . "\n");
put('secret.conf', qq{map "" \$crm_secret { default "crm-gateway-secret-0123456789abcdef"; }\n});

no warnings 'once';
*Test::Nginx::Util::frank_seed = sub { $frank };

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value('config', ($block->config // '') . <<'_EOC_');
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=crm-gateway&client_secret=crm-gateway-secret-0123456789abcdef&resource=$TEST_NGINX_RESOURCE_FORM";
        proxy_pass http://op/token;
    }

    location = /_refresh {
        internal;
        proxy_set_body "grant_type=refresh_token&refresh_token=$tokenrefresh_refresh_token_form&client_id=crm-gateway&client_secret=crm-gateway-secret-0123456789abcdef";
        proxy_pass http://op/token;
    }
_EOC_
});

run_tests();

__DATA__

=== TEST 1: a grant revoked at the provider, with a login: the module logs in again
--- http_config
    tokenrefresh_zone rv:1m state=$TEST_NGINX_STATE_DIR/t1.state
                            key=$TEST_NGINX_STATE_DIR/key;
    tokenrefresh_seed rv erin $TEST_NGINX_STATE_DIR/seed-erin;
--- config
    location /crm/ {
        tokenrefresh rv erin;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my $r = hit(GET => '/crm/a');
is($r->{status}, 200, 'the seed was refreshed');
is($r->{json}{sub}, 'erin', 'the user\'s token');
is(scalar @{ op_revoke(account => 'erin')->{revoked} }, 1, 'the grant is revoked');
api_revoke();
my @res = storm(n => 30, uri => '/crm/b');
is(scalar(grep { $_->{status} == 200 } @res), 30, 'every request served');
is(scalar(grep { ($_->{json}{sub} // '') eq 'crm-gateway' } @res), 30,
   'with the token of the login (client credentials)');
my $s = op_stats();
is($s->{ok}{refresh_token}, 1, 'one refresh (the seed)');
is($s->{errors}{refresh_token}{invalid_grant}, 1, 'one refused: invalid_grant');
is($s->{error_details}{'refresh token not found'}, 1,
   'the revoked grant\'s refresh token is gone');
is($s->{ok}{client_credentials}, 1, 'one login');
is($s->{reuse}, 0, 'no reuse');
--- request
GET /opcalls
--- response_body
calls=3 client_credentials=1 refresh_token=2 failed=1
--- error_log eval
qr/refresh of credential "erin" refused: .*; the refresh token is dropped, logging in/
--- no_error_log
[error]



=== TEST 2: a grant revoked at the provider, no login: the failure status, then a new seed
The requests fail with tokenrefresh_failure_status and Retry-After, after
one refused refresh, however many arrive; the operator logs in again,
writes the new refresh token to the seed file and reloads.
--- http_config
    tokenrefresh_zone rv:1m state=$TEST_NGINX_STATE_DIR/t2.state
                            key=$TEST_NGINX_STATE_DIR/key;
    tokenrefresh_seed rv dave $TEST_NGINX_STATE_DIR/seed-dave;
--- config
    location /crm/ {
        tokenrefresh rv dave;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_failure_status 503;
        tokenrefresh_backoff 1s 2s;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my $r = hit(GET => '/crm/a');
is($r->{status}, 200, 'the seed was refreshed');
is($r->{json}{sub}, 'dave', 'the user\'s token');
is(scalar @{ op_revoke(account => 'dave')->{revoked} }, 1, 'the grant is revoked');
api_revoke();
my @res = storm(n => 30, uri => '/crm/b');
is(scalar(grep { $_->{status} == 503 } @res), 30, 'every request: 503');
is(scalar(grep { defined $_->{headers}{'retry-after'} } @res), 30,
   'with Retry-After');
is(scalar(grep { $_->{body} =~ /invalid_token|"ok"/ } @res), 0,
   'neither the API\'s 401 nor its answer');
sleep 2.5;
$r = hit(GET => '/crm/c');
is($r->{status}, 503, 'after the back-off: still the failure status');
ok(defined $r->{headers}{'retry-after'}, 'with Retry-After');
my $s = op_stats();
is($s->{by_grant}{refresh_token}, 2, 'the seed\'s refresh and one refused');
is($s->{errors}{refresh_token}{invalid_grant}, 1, 'refused: invalid_grant');
is(api_stats()->{ok}, 1, 'the API saw one good token');
# the operator logs in again
put('seed-dave', login_seed('dave') . "\n");
reload_nginx();
$r = hit(GET => '/crm/d');
is($r->{status}, 200, 'the new seed works');
is($r->{json}{sub}, 'dave', 'the user\'s token again');
--- request
GET /opcalls
--- response_body
calls=4 authorization_code=1 refresh_token=3 failed=1
--- error_log eval
[qr/refresh of credential "dave" refused: the token endpoint answered 400 invalid_grant; requests fail with 503/,
 qr/credential "dave" seeded from ".*seed-dave"/]
--- no_error_log
[crit]



=== TEST 3: reuse detection: a copy of the refresh token is used elsewhere, the provider revokes the grant
The credential's seed was rotated by the module; someone sends the seed
again.  oidc-provider detects the reuse, revokes the grant and with it
the refresh token the module holds.  The module's next refresh is refused;
it logs in.
--- http_config
    tokenrefresh_zone rv:1m state=$TEST_NGINX_STATE_DIR/t3.state
                            key=$TEST_NGINX_STATE_DIR/key;
    tokenrefresh_seed rv frank $TEST_NGINX_STATE_DIR/seed-frank;
--- config
    location /crm/ {
        tokenrefresh rv frank;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my $r = hit(GET => '/crm/a');
is($r->{status}, 200, 'the seed was refreshed (and rotated)');
is($r->{json}{sub}, 'frank', 'the user\'s token');
my $t = op_token(grant_type => 'refresh_token', refresh_token => frank_seed(),
                 client_id => 'crm-gateway',
                 client_secret => 'crm-gateway-secret-0123456789abcdef');
is($t->{status}, 400, 'the spent seed, sent again by someone else: 400');
is($t->{error}, 'invalid_grant', 'invalid_grant');
my $s = op_stats();
is($s->{reuse}, 1, 'the provider detected the reuse');
is($s->{revoked_grants}, 1, 'and revoked the grant');
is(scalar(grep { $_->{account} eq 'frank' } @{ op_grants() }), 0, 'it is gone');
api_revoke();
$r = hit(GET => '/crm/b');
is($r->{status}, 200, 'served');
is($r->{json}{sub}, 'crm-gateway', 'with the token of the login');
$s = op_stats();
is($s->{reuse}, 1, 'the module sent no spent refresh token');
is($s->{errors}{refresh_token}{invalid_grant}, 2,
   'the reuse, and the module\'s refresh refused');
--- request
GET /opcalls
--- response_body
calls=4 client_credentials=1 refresh_token=3 failed=2 reuse=1 revoked_grants=1
--- error_log eval
qr/refresh of credential "frank" refused: .*; the refresh token is dropped, logging in/
--- no_error_log
[error]



=== TEST 4: a wrong client secret on a refresh: invalid_client must not cost the refresh token
The provider answers 401 invalid_client: the client's authentication
failed, the refresh token is still good (oidc-provider checks the client
before it looks at the refresh token).  The operator fixes the secret and
reloads; the refresh token should still work.  The module treats every
400 and 401 from a refresh as a refused refresh token and drops it, so
a seed-only credential needs a new login.
--- http_config
    include $TEST_NGINX_STATE_DIR/secret.conf;
    tokenrefresh_zone rv:1m state=$TEST_NGINX_STATE_DIR/t4.state
                            key=$TEST_NGINX_STATE_DIR/key;
    tokenrefresh_seed rv gina $TEST_NGINX_STATE_DIR/seed-gina;
--- config
    location /gina/ {
        tokenrefresh rv gina;
        tokenrefresh_refresh /_refresh_gina;
        tokenrefresh_backoff 100ms 100ms;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }

    location = /_refresh_gina {
        internal;
        proxy_set_body "grant_type=refresh_token&refresh_token=$tokenrefresh_refresh_token_form&client_id=crm-gateway&client_secret=$crm_secret";
        proxy_pass http://op/token;
    }
--- init
my $r = hit(GET => '/gina/a');
is($r->{status}, 200, 'the seed was refreshed');
put('secret.conf', qq{map "" \$crm_secret { default "a-wrong-secret"; }\n});
reload_nginx();
api_revoke();
is(hit(GET => '/gina/b')->{status}, 502, 'the refresh failed: wrong secret');
my $s = op_stats();
is($s->{errors}{refresh_token}{invalid_client}, 1, 'invalid_client');
is($s->{by_status}{401}, 1, 'with 401');
put('secret.conf', qq{map "" \$crm_secret { default "crm-gateway-secret-0123456789abcdef"; }\n});
reload_nginx();
is(hit(GET => '/gina/c')->{status}, 200,
   'the secret fixed: the refresh token still works');
is(scalar(grep { $_->{account} eq 'gina' } @{ op_grants() }), 1,
   'the grant is alive at the provider all along');
is(op_stats()->{revoked_grants}, 0, 'the provider revoked nothing');
--- request
GET /opcalls
--- response_body_like: ^calls=\d+ refresh_token=\d+



=== TEST 5: a worker killed with a refresh in flight: the spent refresh token goes again, the provider revokes the grant
The documented limit of the state file ("If a worker dies with a refresh in
flight, the module cannot know whether the provider received it"), against
a real provider: the provider rotated the refresh token (it handled the
request after the worker died); another worker sees that the lease's
holder is gone, takes the lease over and sends the same refresh token; oidc-provider takes it for a stolen copy and
revokes the grant; the module logs in.  The request is served.
--- http_config
    tokenrefresh_zone rv:1m state=$TEST_NGINX_STATE_DIR/t5.state
                            key=$TEST_NGINX_STATE_DIR/key;
    tokenrefresh_seed rv ivan $TEST_NGINX_STATE_DIR/seed-ivan;
--- config
    location /crm/ {
        tokenrefresh rv ivan;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_refresh_timeout 1s;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/crm/a')->{status}, 200, 'the seed was refreshed');
op_delay(1000);
api_revoke();
my $log0 = error_log_size();
my $h = fire(GET => '/crm/b');
ok(wait_until(sub { op_stats()->{inflight} == 1 }, 5), 'a refresh in flight');
my ($leader) = pids_in(qr/refresh of credential "ivan" started/,
                       error_log_since($log0));
ok($leader, "sent by worker " . ($leader // '?'));
kill 'KILL', $leader if $leader;
collect($h, 10);
ok(wait_until(sub { op_stats()->{inflight} == 0 }, 5),
   'the provider handled it all the same');
op_delay(0);
my $r = hit(GET => '/crm/c');
is($r->{status}, 200, 'served');
my $s = op_stats();
is($s->{ok}{refresh_token}, 2,
   'the seed\'s refresh and the dead worker\'s both succeeded at the provider');
is($s->{reuse}, 1, 'the spent refresh token went again: reuse detected');
is($s->{revoked_grants}, 1, 'the provider revoked the grant');
is($r->{json}{sub}, 'crm-gateway', 'the token of the login');
is($s->{ok}{client_credentials}, 1, 'one login');
--- request
GET /opcalls
--- response_body
calls=4 client_credentials=1 refresh_token=3 failed=1 reuse=1 revoked_grants=1
--- error_log eval
qr/the lease of worker \d+ on credential "ivan" (?:is gone|expired), taking over/
--- timeout: 30
