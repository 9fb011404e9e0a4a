#!/usr/bin/env bats
# vimg itself: dispatch, --help, --version, and that every subcommand of
# cmd/vimg/commands.def is listed in --help and has a man page section.
load ../helpers

commands() {
    sed -n 's/^CMD(\([a-z-]*\),.*/\1/p' "$VIMG_SRC/cmd/vimg/commands.def"
}

@test "every command is in --help and has a section in vimg.1.pod" {
    local help c n=0
    help=$("$VIMG" --help)
    for c in $(commands); do
        n=$((n + 1))
        [[ "$help" == *"  $c "* ]] || fail "'$c' missing from vimg --help"
        grep -q "^=head2 $c\$" "$VIMG_SRC/man/vimg.1.pod" ||
            fail "no '=head2 $c' in man/vimg.1.pod"
        run "$VIMG" "$c" --help
        assert_success
        assert_output --partial "Usage: vimg $c"
    done
    [ "$n" -ge 2 ]
}

@test "--version prints the version" {
    run "$VIMG" --version
    assert_success
    assert_output --regexp '^vimg version [0-9]+\.[0-9]+'
}

@test "no command and an unknown command fail with one line" {
    run "$VIMG"
    assert_failure 1
    run "$VIMG" frobnicate
    assert_failure 1
    assert_output "vimg: unknown command 'frobnicate' (see 'vimg --help')"
}

@test "an unknown option fails" {
    run "$VIMG" info --no-such-option x
    assert_failure 1
}

@test "--output takes human or json, with qemu-img's message, in every command" {
    local c
    for c in info check map measure; do
        run "$VIMG" "$c" --output=xml x.img
        assert_failure 1
        assert_output "vimg: $c: --output must be used with human or json as argument. (see 'vimg $c --help')"
    done
}
