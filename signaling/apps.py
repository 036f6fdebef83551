from django.apps import AppConfig


class SignalingConfig(AppConfig):
    name = "signaling"
    verbose_name = "Signaling"

    def ready(self) -> None:
        # The system checks of settings that contradict each other (signaling/checks.py).
        from signaling import checks

        checks.register_checks()
