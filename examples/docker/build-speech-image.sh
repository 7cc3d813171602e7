#!/usr/bin/env bash
# Builds the image `autodeploy-speech:local` from this workspace's `speech` binary, with no
# registry: the binary, the shared libraries `ldd` lists and the dynamic loader, in a
# `FROM scratch` image. Used by examples/docker.toml.
#
#   examples/docker/build-speech-image.sh            # release build (default)
#   PROFILE=debug examples/docker/build-speech-image.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
profile="${PROFILE:-release}"
if [ "$profile" = release ]; then
    cargo build --release -p autodeploy-examples --bin speech
else
    cargo build -p autodeploy-examples --bin speech
fi
binary="target/$profile/speech"
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/speech"
for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
    mkdir -p "$context$(dirname "$lib")"
    cp -L "$lib" "$context$lib"
done
cat > "$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY . /
ENTRYPOINT ["/speech"]
CMD ["--host", "0.0.0.0"]
EXPOSE 8080
DOCKERFILE
docker build --quiet --label autodeploy.example=speech -t autodeploy-speech:local "$context"
echo "built autodeploy-speech:local"
