#!/bin/sh
# Starts RabbitMQ with the orchestrator's user, whose password comes from the secret file amqp_password: it is
# written into a config file readable only by RabbitMQ, never into the compose file or the environment. RabbitMQ
# creates the default user on its first boot only: after changing the password, also change it with rabbitmqctl
# (or remove the rabbitmq volume).
set -eu
password_file=/run/secrets/amqp_password
if [ ! -r "$password_file" ]; then
  echo "rabbitmq-entrypoint: missing secret file $password_file" >&2
  exit 1
fi
conf=/etc/rabbitmq/conf.d/90-orchestrator-user.conf
umask 077
{
  echo "default_user = orchestrator"
  echo "default_pass = $(cat "$password_file")"
} >"$conf"
chown rabbitmq:rabbitmq "$conf"
exec docker-entrypoint.sh rabbitmq-server
