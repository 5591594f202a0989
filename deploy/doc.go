// Package deploy holds no code: it checks the local-cluster deployment files
// at the repository root (Dockerfile, .dockerignore, docker-compose.yml) and
// in deploy/nginx. Its tests load docker-compose.yml with compose-go, the
// library Docker Compose uses, offline and independent of the host
// environment, so a broken deployment is caught without a Docker engine.
package deploy
