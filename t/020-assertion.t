# Client assertions (RFC 7523; OpenID Connect private_key_jwt and
# client_secret_jwt): $tokenrefresh_client_assertion signs a fresh JWT for
# each token request.  The test checks each algorithm's signature with the
# openssl command (RS256, ES256) or Digest::SHA (HS256), and the claims;
# and that "nginx -t" refuses keys that are missing, wrong or exposed.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;
use File::Temp ();
use MIME::Base64 ();
use JSON::PP ();
use Digest::SHA ();

no_shuffle();

my $dir = File::Temp::tempdir('tokenrefresh-jwt-XXXXXX', TMPDIR => 1,
                              CLEANUP => 1);
$ENV{TEST_NGINX_KEY_DIR} = $dir;

sub openssl {
    my $cmd = join ' ', 'openssl', @_;
    system("$cmd >/dev/null 2>&1") == 0 or die "$cmd failed";
}

sub put {
    my ($name, $content, $mode) = @_;
    open my $fh, '>', "$dir/$name" or die "$dir/$name: $!";
    print $fh $content;
    close $fh;
    chmod $mode // 0600, "$dir/$name";
}

openssl("genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out $dir/rsa.pem");
openssl("pkey -in $dir/rsa.pem -pubout -out $dir/rsa.pub");
openssl("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $dir/ec.pem");
openssl("pkey -in $dir/ec.pem -pubout -out $dir/ec.pub");
openssl("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out $dir/ec384.pem");
openssl("genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out $dir/rsa1024.pem");
chmod 0600, glob "$dir/*.pem";
system("cp $dir/rsa.pem $dir/rsa-open.pem && chmod 644 $dir/rsa-open.pem") == 0
    or die;
put('hmac', "0123456789abcdef0123456789abcdef-hmac\n");
put('hmac-short', "too-short\n");
put('garbage.pem', "-----BEGIN PRIVATE KEY-----\nnot base64\n");

sub b64url_decode {
    my ($s) = @_;
    $s =~ tr{-_}{+/};
    $s .= '=' x ((4 - length($s) % 4) % 4);
    return MIME::Base64::decode_base64($s);
}

# an ASN.1 INTEGER from an unsigned big-endian number
sub der_int {
    my ($n) = @_;
    $n =~ s/^\x00+//;
    $n = "\x00$n" if !length $n || ord($n) & 0x80;
    return "\x02" . chr(length $n) . $n;
}

# the client assertions the provider received, decoded
sub assertions {
    my @out;
    for my $r (@{ requests() }) {
        next unless $r->{port} eq 'idp' && $r->{path} eq '/token';
        my ($jwt) = ($r->{body} // '') =~ /client_assertion=([^&]+)/ or next;
        my ($h, $p, $s) = split /\./, $jwt;
        push @out, { jwt => $jwt, input => "$h.$p",
                     header => JSON::PP::decode_json(b64url_decode($h)),
                     claims => JSON::PP::decode_json(b64url_decode($p)),
                     sig => b64url_decode($s),
                     type => ($r->{body} =~ /client_assertion_type=([^&]+)/)[0] };
    }
    return @out;
}

# 1 if the signature verifies with the public key (or secret), else 0
sub verify {
    my ($alg, $a) = @_;
    if ($alg eq 'HS256') {
        my $secret = "0123456789abcdef0123456789abcdef-hmac";
        return Digest::SHA::hmac_sha256($a->{input}, $secret) eq $a->{sig}
               ? 1 : 0;
    }
    my $sig = $a->{sig};
    my $pub = "$dir/rsa.pub";
    if ($alg eq 'ES256') {
        return 0 unless length $sig == 64;
        my $seq = der_int(substr $sig, 0, 32) . der_int(substr $sig, 32);
        $sig = "\x30" . chr(length $seq) . $seq;
        $pub = "$dir/ec.pub";
    }
    put('input', $a->{input});
    put('sig', $sig);
    return system("openssl dgst -sha256 -verify $pub -signature $dir/sig "
                  . "$dir/input >/dev/null 2>&1") == 0 ? 1 : 0;
}

no warnings 'once';
*Test::Nginx::Util::assertions = \&assertions;
*Test::Nginx::Util::verify = \&verify;

# Three logins (the access token is revoked twice) for a credential whose
# token location authenticates with an assertion signed by $alg.
sub check_alg {
    my ($alg) = @_;
    is(hit(GET => '/api/a')->{status}, 200, "$alg: logged in");
    for my $i (1 .. 2) {
        revoke();
        is(hit(GET => "/api/b$i")->{status}, 200, "$alg: logged in again");
    }
    my @a = assertions();
    is(scalar @a, 3, "$alg: three assertions");
    my $now = time;
    my %jti;
    for my $a (@a) {
        is(verify($alg, $a), 1, "$alg: the signature verifies");
        is($a->{header}{alg}, $alg, "$alg: alg");
        is($a->{header}{typ}, 'JWT', "$alg: typ");
        is($a->{type},
           'urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer',
           "$alg: assertion type");
        my $c = $a->{claims};
        is($c->{iss}, 'orders-"svc"', "$alg: iss is the client id");
        is($c->{sub}, 'orders-"svc"', "$alg: sub is the client id");
        is($c->{aud}, 'https://idp.example.com/oauth/token', "$alg: aud");
        like($c->{jti}, qr/^[0-9a-f]{32}$/, "$alg: a random jti");
        $jti{ $c->{jti} }++;
        cmp_ok(abs($c->{iat} - $now), '<=', 5, "$alg: iat is now");
        is($c->{exp} - $c->{iat}, 30, "$alg: exp is iat + lifetime");
        # the verifier can fail: one flipped bit in the signed input
        my %bad = (%$a, input => $a->{input} . 'x');
        is(verify($alg, \%bad), 0, "$alg: a changed assertion does not verify");
    }
    is(scalar keys %jti, 3, "$alg: every jti differs");
}

*Test::Nginx::Util::check_alg = \&check_alg;

add_block_preprocessor(sub {
    my $block = shift;
    my $alg = $block->alg or return;

    my $key = $alg eq 'HS256' ? 'secret=$TEST_NGINX_KEY_DIR/hmac'
            : $alg eq 'ES256' ? 'key=$TEST_NGINX_KEY_DIR/ec.pem'
            : 'key=$TEST_NGINX_KEY_DIR/rsa.pem';
    my $kid = $alg eq 'RS256' ? ' kid=k1' : '';

    $block->set_value('config', <<"_EOC_" . ($block->config // ''));
    location = /_login {
        internal;
        tokenrefresh_client_assertion alg=$alg $key$kid
            client_id=orders-"svc"
            audience=https://idp.example.com/oauth/token lifetime=30s;
        proxy_set_body "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=\$tokenrefresh_client_assertion";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_min_token_age 0;
        proxy_set_header Authorization \$tokenrefresh_authorization;
        proxy_pass http://api;
    }
_EOC_

    $block->set_value('init', "check_alg('$alg');");
    $block->set_value('request', 'GET /calls');
    $block->set_value('response_body',
                      "calls=3 client_credentials=3\n");
    $block->set_value('no_error_log', "[error]\n");
});

run_tests();

__DATA__

=== TEST 1: RS256 (private_key_jwt), with a key id
--- alg: RS256
--- config
--- init



=== TEST 2: ES256 (private_key_jwt): R || S, not DER
--- alg: ES256
--- config
--- init



=== TEST 3: HS256 (client_secret_jwt)
--- alg: HS256
--- config
--- init



=== TEST 4: the variable is empty outside the module's token requests
--- config
    location = /_login {
        internal;
        tokenrefresh_client_assertion alg=HS256
            secret=$TEST_NGINX_KEY_DIR/hmac client_id=c audience=a;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location = /peek {
        tokenrefresh_client_assertion alg=HS256
            secret=$TEST_NGINX_KEY_DIR/hmac client_id=c audience=a;
        return 200 "[$tokenrefresh_client_assertion]\n";
    }
--- request
GET /peek
--- response_body
[]
--- no_error_log
[error]



=== TEST 5: a key that does not exist
--- config
    location = /_login {
        tokenrefresh_client_assertion alg=RS256
            key=$TEST_NGINX_KEY_DIR/nosuch.pem client_id=c audience=a;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*cannot open "\S+nosuch\.pem" \(2: No such file or directory\) in .*nginx\.conf:\d+/



=== TEST 6: a private key others may read
--- config
    location = /_login {
        tokenrefresh_client_assertion alg=RS256
            key=$TEST_NGINX_KEY_DIR/rsa-open.pem client_id=c audience=a;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"\S+rsa-open\.pem" holds a secret and may be read by group or others/



=== TEST 7: not a PEM private key
--- config
    location = /_login {
        tokenrefresh_client_assertion alg=ES256
            key=$TEST_NGINX_KEY_DIR/garbage.pem client_id=c audience=a;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"\S+garbage\.pem" is not an unencrypted PEM private key in .*nginx\.conf:\d+/



=== TEST 8: an RSA key for ES256
--- config
    location = /_login {
        tokenrefresh_client_assertion alg=ES256
            key=$TEST_NGINX_KEY_DIR/rsa.pem client_id=c audience=a;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*ES256 needs an EC key on the P-256 curve, "\S+rsa\.pem" is not one in .*nginx\.conf:\d+/



=== TEST 9: a P-384 key for ES256
--- config
    location = /_login {
        tokenrefresh_client_assertion alg=ES256
            key=$TEST_NGINX_KEY_DIR/ec384.pem client_id=c audience=a;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*ES256 needs an EC key on the P-256 curve, "\S+ec384\.pem" is not one/



=== TEST 10: a 1024-bit RSA key
--- config
    location = /_login {
        tokenrefresh_client_assertion alg=RS256
            key=$TEST_NGINX_KEY_DIR/rsa1024.pem client_id=c audience=a;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*RS256 needs an RSA key of 2048 to 8192 bits, "\S+rsa1024\.pem" is not one/



=== TEST 11: a short HMAC secret
--- config
    location = /_login {
        tokenrefresh_client_assertion alg=HS256
            secret=$TEST_NGINX_KEY_DIR/hmac-short client_id=c audience=a;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*the HS256 secret "\S+hmac-short" is shorter than 32 bytes/



=== TEST 12: HS256 with a private key
--- config
    location = /_login {
        tokenrefresh_client_assertion alg=HS256
            key=$TEST_NGINX_KEY_DIR/rsa.pem client_id=c audience=a;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"tokenrefresh_client_assertion" directive with alg=HS256 needs secret=file, not key= in .*nginx\.conf:\d+/



=== TEST 13: no audience
--- config
    location = /_login {
        tokenrefresh_client_assertion alg=RS256
            key=$TEST_NGINX_KEY_DIR/rsa.pem client_id=c;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"tokenrefresh_client_assertion" directive needs alg=, client_id= and audience= in .*nginx\.conf:\d+/



=== TEST 14: an unknown algorithm
--- config
    location = /_login {
        tokenrefresh_client_assertion alg=none
            key=$TEST_NGINX_KEY_DIR/rsa.pem client_id=c audience=a;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "alg=none" in .*nginx\.conf:\d+/
