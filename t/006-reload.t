# Tokens live in the shared zone and survive "nginx -s reload": no new
# login after a reload.  A reload that changes the zone's size starts from
# an empty zone.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;

master_on();
workers(2);
no_shuffle();
run_tests();

__DATA__

=== TEST 1: a reload keeps the tokens
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my $r = hit(GET => '/api/a');
like($r->{content}, qr/"token_n":1\b/, 'logged in');
my @old = worker_pids();
is(scalar @old, 2, 'two workers');
kill 'HUP', master_pid();
my %old = map { $_ => 1 } @old;
ok(wait_until(sub {
    my @now = worker_pids();
    return @now == 2 && !grep { $old{$_} } @now;
}, 10), 'the old workers were replaced');
--- request eval
["GET /api/b", "GET /api/c", "GET /calls"]
--- response_body_like eval
[qr/"token_n":1\b/, qr/"token_n":1\b/, "^calls=1 client_credentials=1\n\$"]
--- no_error_log
[error]
