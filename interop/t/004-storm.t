# Scenario 4: storms.  Many requests need a token at the same moment, in
# two workers: at a cold start, and after the API starts rejecting the
# current token (a revocation, a key rotation at the API).  However many
# requests, the provider sees exactly one token request, never two at once,
# and every request is answered 200 by the API.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use lib '.';
use t::Interop;
use Test::Nginx::Socket 'no_plan';

master_on();
workers(2);
worker_connections(1024);
no_shuffle();

my $N = $ENV{INTEROP_STORM} || 50;

put('key', random_key() . "\n");
put('seed-hank', login_seed('hank') . "\n");

sub check_storm {
    my ($what, $uri, $sub, $grant) = @_;
    my @res = storm(n => $N, uri => $uri);
    is(scalar(grep { $_->{status} == 200 } @res), $N, "$what: every request served")
        or diag explain [ map { "$_->{status} $_->{body}" } grep { $_->{status} != 200 } @res ];
    is(scalar(grep { ($_->{json}{sub} // '') eq $sub } @res), $N,
       "$what: with the credential's token");
    my %jti = map { ($_->{json}{jti} // '') => 1 } @res;
    is(scalar keys %jti, 1, "$what: all with one token");
    my $s = op_stats();
    is($s->{max_inflight}, 1, "$what: never two token requests at once");
    return \%jti;
}

no warnings 'once';
*Test::Nginx::Util::check_storm = \&check_storm;
*Test::Nginx::Util::N = sub { $N };

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value('config', ($block->config // '') . <<'_EOC_');
    location = /_login_post {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=cc-post&client_secret=cc-post-secret-0123456789abcdef&resource=$TEST_NGINX_RESOURCE_FORM";
        proxy_pass http://op/token;
    }

    location = /_login_es256 {
        internal;
        tokenrefresh_client_assertion alg=ES256 key=$TEST_NGINX_KEYS/es256.pem
            client_id=cc-es256 audience=http://127.0.0.1:$TEST_NGINX_OP_PORT;
        proxy_set_body "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=$tokenrefresh_client_assertion&resource=$TEST_NGINX_RESOURCE_FORM";
        proxy_pass http://op/token;
    }

    # with resource= (the other files rely on the provider's
    # useGrantedResource)
    location = /_refresh {
        internal;
        proxy_set_body "grant_type=refresh_token&refresh_token=$tokenrefresh_refresh_token_form&client_id=crm-gateway&client_secret=crm-gateway-secret-0123456789abcdef&resource=$TEST_NGINX_RESOURCE_FORM";
        proxy_pass http://op/token;
    }
_EOC_
});

run_tests();

__DATA__

=== TEST 1: a cold start: no token yet, many requests at once, one login (private_key_jwt ES256)
--- http_config
    tokenrefresh_zone tokens:1m;
--- config
    location /api/ {
        tokenrefresh tokens cc-es256;
        tokenrefresh_login /_login_es256;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_pass http://api;
    }
--- init
check_storm('cold start', '/api/cold/', 'cc-es256');
is(api_stats()->{unauthorized}, 0, 'no request reached the API without a token');
--- request
GET /opcalls
--- response_body
calls=1 client_credentials=1
--- no_error_log
[error]



=== TEST 2: a storm on a revoked token: client credentials
--- http_config
    tokenrefresh_zone tokens:1m;
--- config
    location /api/ {
        tokenrefresh tokens cc-post;
        tokenrefresh_login /_login_post;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_pass http://api;
    }
--- init
my $first = hit(GET => '/api/warm');
is($first->{status}, 200, 'a token');
api_revoke();
my $jti = check_storm('revoked', '/api/storm/', 'cc-post');
ok(!$jti->{ $first->{json}{jti} }, 'a new token');
cmp_ok(api_stats()->{unauthorized}, '>=', 1, 'the API rejected the old token');
cmp_ok(api_stats()->{unauthorized}, '<=', N(), 'at most once per request');
--- request
GET /opcalls
--- response_body
calls=2 client_credentials=2
--- no_error_log
[error]



=== TEST 3: a storm on a revoked token: a rotating refresh token from a login
--- http_config
    tokenrefresh_zone rot:1m state=$TEST_NGINX_STATE_DIR/t3.state
                             key=$TEST_NGINX_STATE_DIR/key;
    tokenrefresh_seed rot hank $TEST_NGINX_STATE_DIR/seed-hank;
--- config
    location /crm/ {
        tokenrefresh rot hank;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_pass http://api;
    }
--- init
my $first = hit(GET => '/crm/warm');
is($first->{status}, 200, 'the seed was refreshed');
for my $round (1 .. 3) {
    api_revoke();
    my $jti = check_storm("revoked, round $round", "/crm/storm$round/", 'hank');
    ok(!$jti->{ $first->{json}{jti} }, "round $round: a new token");
    ($first->{json}{jti}) = keys %$jti;
    is(op_stats()->{ok}{refresh_token}, 1 + $round, "round $round: one refresh");
}
my $s = op_stats();
is($s->{reuse}, 0, 'no refresh token sent twice');
is($s->{revoked_grants}, 0, 'the grant is alive');
--- request
GET /opcalls
--- response_body
calls=4 refresh_token=4
--- no_error_log
[error]
