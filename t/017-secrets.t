# No secret in the logs or the status page.  A full scenario runs with
# debug logging: logins, refreshes ahead of expiry and after it, a revoked
# token and its replay, a refused refresh token, a rejected answer, the
# status page.  Then every access and refresh token the provider issued is
# looked for: never in a line of the module's own (any level, debug
# included), never in any line at info or above (from anywhere), never in
# the status output.  The scenario includes a zone with a state file and a
# seed, a restart that reads the file back, a rotation, and client
# assertions, which are secrets too.  nginx's own debug lines do print upstream request
# headers and variable values, tokens included: that is why only the
# module's lines are held to this at debug level.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;
use File::Temp ();

master_on();
workers(2);
no_shuffle();

my $dir = File::Temp::tempdir('tokenrefresh-secrets-XXXXXX', TMPDIR => 1,
                              CLEANUP => 1);
$ENV{TEST_NGINX_SECRETS_DIR} = $dir;

for (['key', join('', map { sprintf '%02x', int rand 256 } 1 .. 32)],
     ['seed', 'seed-kept-1'],
     ['hmac', 'an-hmac-secret-of-more-than-32-bytes'])
{
    open my $fh, '>', "$dir/$_->[0]" or die "$dir/$_->[0]: $!";
    print $fh "$_->[1]\n";
    close $fh;
    chmod 0600, "$dir/$_->[0]";
}

run_tests();

__DATA__

=== TEST 1: a full scenario, then a search for every token issued
--- http_config
    tokenrefresh_zone kept:1m state=$TEST_NGINX_SECRETS_DIR/state
                              key=$TEST_NGINX_SECRETS_DIR/key;
    tokenrefresh_seed kept crm $TEST_NGINX_SECRETS_DIR/seed;
--- config
    location = /_kept_refresh {
        internal;
        tokenrefresh_client_assertion alg=HS256
            secret=$TEST_NGINX_SECRETS_DIR/hmac client_id=crm audience=idp;
        proxy_set_body "grant_type=refresh_token&refresh_token=$tokenrefresh_refresh_token_form&client_assertion=$tokenrefresh_client_assertion";
        proxy_pass http://idp/token;
    }

    location /kept/ {
        tokenrefresh kept crm;
        tokenrefresh_refresh /_kept_refresh;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }

    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location = /_refresh {
        internal;
        proxy_set_body "grant_type=refresh_token&refresh_token=$tokenrefresh_refresh_token_form";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens $arg_c;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_ahead 1h;
        tokenrefresh_min_token_age 0;
        tokenrefresh_backoff 100ms;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }

    location = /status {
        tokenrefresh_status write=on;
    }
--- init
mock(lifetime => 2);
hit(GET => "/api/$_?c=billing") for 1 .. 3;          # a login
my $t0 = time;
wait_until(sub { time > $t0 + scaled(1.1) }, 3);
hit(GET => '/api/ahead?c=billing');                    # a refresh ahead
wait_until(sub { calls() =~ /refresh_token=1/ }, 5);
wait_until(sub { time > $t0 + scaled(4.2) }, 6);
hit(GET => '/api/expired?c=billing');                  # after expiry
mock(lifetime => 3600);
hit(GET => '/api/x?c=other');
revoke(cred => 'other');
hit(GET => '/api/replayed?c=other');                   # a replay
mock(fault => 'invalid_grant', fault_grant => 'refresh_token',
     fault_count => 1);
hit(POST => '/status?zone=tokens&credential=other&action=refresh');
hit(GET => '/api/relogin?c=other');                    # refused, login
mock(fault => 'badbytes', fault_count => 1);
hit(GET => '/api/bad?c=third');                        # a rejected answer
# a seed, rotated; a restart reads the state file back; rotated again
mock(rotate => 1);
control('grant', { cred => 'crm', refresh_token => 'seed-kept-1' });
hit(GET => '/kept/a');
restart_nginx('QUIT');
revoke(cred => 'crm');
is(hit(GET => '/kept/b')->{status}, 200, 'the rotated token after a restart');
my @assertions = map { $_->{body} =~ /client_assertion=([^&]+)/ ? $1 : () }
                 grep { $_->{path} eq '/token' } @{ requests() };
is(scalar @assertions, 2, 'two client assertions sent');
my $json = hit(GET => '/status')->{content};
my $prom = hit(GET => '/status?format=prometheus')->{content};

my $s = stats();
my @secrets = (@{ $s->{issued} }, @{ $s->{refresh_issued} }, @assertions,
               'an-hmac-secret-of-more-than-32-bytes');
cmp_ok(scalar @{ $s->{issued} }, '>=', 5, scalar(@{ $s->{issued} })
                                          . ' access tokens issued');
cmp_ok(scalar @{ $s->{refresh_issued} }, '>=', 4,
       scalar(@{ $s->{refresh_issued} }) . ' refresh tokens issued');

my @log = error_log_since(0);
my @own = grep { /tokenrefresh:/ } @log;
my @info = grep { /\[(info|notice|warn|error|crit|alert|emerg)\]/ } @log;
cmp_ok(scalar @own, '>', 20, scalar(@own) . " lines of the module's own");
cmp_ok(scalar @info, '>', 10, scalar(@info) . ' lines at info and above');

my $leak = sub {
    my ($what, @lines) = @_;
    my @found;
    for my $secret (@secrets) {
        push @found, grep { index($_, $secret) >= 0 } @lines;
    }
    is(scalar @found, 0, "no token in $what") or diag(@found[0 .. 2]);
};
$leak->("the module's own lines", @own);
$leak->('lines at info and above', @info);
$leak->('the JSON status', $json);
$leak->('the Prometheus status', $prom);

# the control: nginx's own debug lines do carry them, so the search works
my @core = grep { !/tokenrefresh:/ } @log;
my $seen = grep { my $l = $_; grep { index($l, $_) >= 0 } @secrets } @core;
cmp_ok($seen, '>', 0, "the search finds tokens in nginx's own debug lines");
is(scalar(grep { /X-Injected|at-bad/ } @own, @info), 0,
   'nor the rejected token');
--- request
GET /calls
--- response_body_like: ^calls=\d+ client_credentials=\d+ refresh_token=\d+\n$
