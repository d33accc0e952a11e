"""The Data quality pages in Airflow's UI: the app, its assets, charts and reports."""
