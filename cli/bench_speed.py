"""qinco-bench speed (placeholder until implemented)."""
import click


@click.command("speed")
def speed():
    """Not implemented yet."""
    raise click.ClickException("qinco-bench speed is not implemented yet")
